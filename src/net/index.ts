export {
  MAX_FRAME_BYTES,
  FRAME_HEADER_BYTES,
  FrameError,
  FrameTooLargeError,
  FrameDecoder,
  encodeFrame,
} from "./framing";
export {
  DEFAULT_MAX_QUEUED_BYTES,
  FramedConn,
  type FrameSocket,
  type FramedConnHandlers,
  type FramedConnOptions,
} from "./conn";
export { listenFrames, type FrameListener, type ListenFramesOptions } from "./listener";
export { DEFAULT_DIAL_TIMEOUT_MS, DialError, dialFrames, type DialHandlers } from "./dial";
export {
  PEER_DIAL_TIMEOUT_MS,
  PEER_MAX_BACKOFF_MS,
  PEER_MIN_BACKOFF_MS,
  PeerLink,
  type PeerLinkOptions,
} from "./peer";
