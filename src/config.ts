// nodes.conf: one "<id> <ip> <port>" per line; '#' starts a comment; blank lines are ignored.

import { readFileSync } from "node:fs";

export interface NodeAddr {
  id: number;
  host: string;
  port: number;
}

export class ConfigError extends Error {}

export const MAX_NODES = 64;

export function parseNodesConf(text: string, source = "nodes.conf"): NodeAddr[] {
  const nodes: NodeAddr[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*/, "").trim();
    if (!line) continue;
    const where = `${source}:${i + 1}`;
    const parts = line.split(/\s+/);
    if (parts.length !== 3) {
      throw new ConfigError(`${where}: expected "<id> <ip> <port>", got ${JSON.stringify(lines[i]!.trim())}`);
    }
    const [idText, host, portText] = parts as [string, string, string];
    if (!/^\d+$/.test(idText) || Number(idText) > 1_000_000) {
      throw new ConfigError(`${where}: node id must be a non-negative integer, got ${JSON.stringify(idText)}`);
    }
    if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new ConfigError(`${where}: port must be 1-65535, got ${JSON.stringify(portText)}`);
    }
    if (!/^[A-Za-z0-9.:\-\[\]]+$/.test(host)) {
      throw new ConfigError(`${where}: bad host ${JSON.stringify(host)}`);
    }
    const node = { id: Number(idText), host: host.replace(/^\[(.*)\]$/, "$1"), port: Number(portText) };
    const dupId = nodes.find((n) => n.id === node.id);
    if (dupId) throw new ConfigError(`${where}: node id ${node.id} is listed twice`);
    const dupAddr = nodes.find((n) => n.host === node.host && n.port === node.port);
    if (dupAddr) throw new ConfigError(`${where}: ${node.host}:${node.port} is already node ${dupAddr.id}`);
    nodes.push(node);
  }
  if (nodes.length === 0) throw new ConfigError(`${source}: no nodes listed`);
  if (nodes.length > MAX_NODES) throw new ConfigError(`${source}: at most ${MAX_NODES} nodes are supported`);
  return nodes;
}

export function loadNodesConf(path: string): NodeAddr[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code === "EISDIR" ? "it is a directory" : (err as Error).message;
    throw new ConfigError(`cannot read ${path}: ${why} (nodes.conf lists "<id> <ip> <port>" per line)`);
  }
  return parseNodesConf(text, path);
}

/** "host:port" (IPv6 as "[::1]:port"). */
export function formatAddr(a: { host: string; port: number }): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export function parseEndpoint(text: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text.trim());
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new ConfigError(`bad endpoint ${JSON.stringify(text)}: expected host:port`);
  }
  return { host: m[1]!, port: Number(m[2]) };
}
