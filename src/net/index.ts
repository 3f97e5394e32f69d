export {
  MAX_FRAME_BYTES,
  FRAME_HEADER_BYTES,
  FrameError,
  FrameTooLargeError,
  FrameDecoder,
  ByteBudget,
  encodeFrame,
  encodePayload,
} from "./framing";
export {
  DEFAULT_MAX_QUEUED_BYTES,
  FramedConn,
  SlowReaderError,
  type FrameSocket,
  type FramedConnHandlers,
  type FramedConnOptions,
} from "./conn";
export { connectionsWithinFileLimit, DEFAULT_NET_LIMITS, describeNetLimits, type NetLimits } from "./limits";
export {
  listenFrames,
  type FrameListener,
  type ListenFramesOptions,
  type RefusedFrame,
} from "./listener";
export * from "./tls";
export { DEFAULT_DIAL_TIMEOUT_MS, DialError, RefusedError, dialFrames, type DialHandlers } from "./dial";
export {
  PEER_DIAL_TIMEOUT_MS,
  PEER_MAX_BACKOFF_MS,
  PEER_MIN_BACKOFF_MS,
  PeerLink,
  type PeerLinkOptions,
} from "./peer";
