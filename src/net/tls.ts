// TLS material and the identity a certificate of the cluster CA carries.
//
// Every certificate the cluster CA issues (`raftkv certs`, src/cli/certs.ts) has O=raftkv and an OU that
// says what it may do: "node" for a node (CN=node-<id>), or a client role "read", "write" or "admin"
// (CN=the client's name). The TLS layer (Bun's, OpenSSL underneath) checks the chain, the validity dates
// and, on the client side, the node's address against the certificate's subject alternative names; the
// node then reads who the peer is from the verified certificate.

import { readFileSync } from "node:fs";
import { join } from "node:path";

export const CLIENT_ROLES = ["read", "write", "admin"] as const;
export type ClientRole = (typeof CLIENT_ROLES)[number];

/** Who the other end of a mutual-TLS connection is, from its verified certificate. */
export type CertIdentity = { kind: "node"; nodeId: number } | { kind: "client"; name: string; role: ClientRole };

/** PEM text of the cluster CA, this end's certificate and its private key. */
export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

/** Where TLS material is read from (and re-read from on SIGHUP). */
export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/** A TLS or certificate problem: a handshake refused either way, a missing or unreadable file. */
export class TlsError extends Error {
  override name = "TlsError";
}

export const CA_FILE = "ca.pem";
export const CA_KEY_FILE = "ca.key";

/** The files of `name` (node-0, admin, ...) in a certs directory made by `raftkv certs`. */
export function certFilesIn(dir: string, name: string): TlsFiles {
  return { ca: join(dir, CA_FILE), cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

export function nodeCertName(nodeId: number): string {
  return `node-${nodeId}`;
}

export function loadTlsMaterial(files: TlsFiles): TlsMaterial {
  const read = (what: string, file: string): string => {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new TlsError(`cannot read the TLS ${what} ${file}: ${(err as Error).message}`);
    }
    if (!text.includes("-----BEGIN ")) throw new TlsError(`the TLS ${what} ${file} is not a PEM file`);
    return text;
  };
  return { ca: read("CA certificate", files.ca), cert: read("certificate", files.cert), key: read("private key", files.key) };
}

/** Reads the identity from a verified certificate's subject; a string says why it is not one of ours. */
export function certIdentity(subject: Record<string, unknown> | undefined | null): CertIdentity | string {
  if (!subject) return "no certificate";
  const first = (v: unknown) => (Array.isArray(v) ? v[0] : v);
  const cn = first(subject.CN);
  const ou = first(subject.OU);
  if (typeof cn !== "string" || typeof ou !== "string") return "certificate has no CN and OU";
  if (ou === "node") {
    const m = /^node-(\d+)$/.exec(cn);
    return m ? { kind: "node", nodeId: Number(m[1]) } : `node certificate with a bad CN ${JSON.stringify(cn)}`;
  }
  if ((CLIENT_ROLES as readonly string[]).includes(ou)) return { kind: "client", name: cn, role: ou as ClientRole };
  return `certificate with an unknown role OU=${JSON.stringify(ou)}`;
}

export function describeIdentity(id: CertIdentity): string {
  return id.kind === "node" ? `node ${id.nodeId}` : `client ${JSON.stringify(id.name)} (role ${id.role})`;
}

/**
 * True when bytes start like a TLS record (handshake 0x16 or alert 0x15, version 3.x): a TLS peer on a
 * plaintext connection, or a TLS node's alert answering a plaintext client.
 */
export function looksLikeTls(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && (bytes[0] === 0x16 || bytes[0] === 0x15) && bytes[1] === 0x03;
}
