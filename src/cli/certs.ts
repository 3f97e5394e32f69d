// `raftkv certs init` and `raftkv certs client`: a cluster CA and the certificates signed by it.
//
// Keys are ECDSA P-256 made by WebCrypto (Bun's, BoringSSL underneath); certificates are built and signed
// by @peculiar/x509, an X.509 library on top of WebCrypto. Nothing here implements cryptography.
//
// Layout of a certs directory (the same directory serves every node and the admin's CLI):
//   ca.pem, ca.key              the cluster CA (keep ca.key off the nodes if you can: only `certs` needs it)
//   node-<id>.pem, .key         one per node of nodes.conf; SAN = the node's address in nodes.conf
//   <name>.pem, .key            client certificates; OU = role (read, write, admin); `admin` is made by init

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import type { CAC } from "cac";
import { loadNodesConf, type NodeAddr } from "../config";
import { CA_FILE, CA_KEY_FILE, CLIENT_ROLES, nodeCertName, type ClientRole } from "../net/tls";
import { run, UsageError } from "./common";

x509.cryptoProvider.set(globalThis.crypto);

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
/** How long certificates made here are valid. */
export const CERT_VALID_DAYS = 825;
export const CA_VALID_DAYS = 3650;
/** Certificates start being valid a little before now, for clocks that are slightly behind. */
const BACKDATE_MS = 5 * 60_000;
const DAY_MS = 86_400_000;

export class CertsError extends UsageError {}

interface KeyPairPem {
  cert: string;
  key: string;
}

interface CertificateAuthority {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

function serialNumber(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f; // positive
  return Buffer.from(bytes).toString("hex");
}

async function exportKey(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

async function createCa(): Promise<CertificateAuthority & { pem: KeyPairPem }> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: "CN=raftkv cluster CA, O=raftkv",
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + CA_VALID_DAYS * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, key: keys.privateKey, pem: { cert: cert.toString("pem"), key: await exportKey(keys.privateKey) } };
}

async function loadCa(dir: string): Promise<CertificateAuthority> {
  const certFile = join(dir, CA_FILE);
  const keyFile = join(dir, CA_KEY_FILE);
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    throw new CertsError(`${dir} has no cluster CA (${CA_FILE} and ${CA_KEY_FILE}); make one with \`raftkv certs init\``);
  }
  try {
    const cert = new x509.X509Certificate(readFileSync(certFile, "utf8"));
    const der = x509.PemConverter.decodeFirst(readFileSync(keyFile, "utf8"));
    const key = await crypto.subtle.importKey("pkcs8", der, ALGORITHM, false, ["sign"]);
    return { cert, key };
  } catch (err) {
    throw new CertsError(`cannot read the cluster CA in ${dir}: ${(err as Error).message}`);
  }
}

/**
 * A certificate signed by the CA. OU is "node" or the client's role. `validDays` may be negative (a
 * certificate that has already expired, for tests).
 */
export async function issueCertificate(
  ca: CertificateAuthority,
  subject: { cn: string; ou: "node" | ClientRole; addresses?: string[] },
  validDays = CERT_VALID_DAYS,
): Promise<KeyPairPem> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const now = Date.now();
  const notAfter = new Date(now + validDays * DAY_MS);
  const notBefore = new Date(Math.min(now - BACKDATE_MS, notAfter.getTime() - DAY_MS));
  const names = (subject.addresses ?? []).map((a) => ({ type: isIP(a) ? ("ip" as const) : ("dns" as const), value: a }));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${subject.cn}, OU=${subject.ou}, O=raftkv`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      // Nodes are servers to clients and peers, and clients of their peers.
      new x509.ExtendedKeyUsageExtension(
        subject.ou === "node" ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth],
      ),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert: cert.toString("pem"), key: await exportKey(keys.privateKey) };
}

/** issueCertificate with the CA kept in dir (ca.pem, ca.key). */
export async function issueCertificateFromDir(dir: string, subject: Parameters<typeof issueCertificate>[1], validDays = CERT_VALID_DAYS): Promise<KeyPairPem> {
  return issueCertificate(await loadCa(dir), subject, validDays);
}

function writePair(dir: string, name: string, pair: KeyPairPem): string[] {
  writeFileSync(join(dir, `${name}.pem`), pair.cert, { mode: 0o644 });
  writeFileSync(join(dir, `${name}.key`), pair.key, { mode: 0o600 });
  return [`${name}.pem`, `${name}.key`];
}

const CLIENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** `raftkv certs init`: a new CA, one certificate per node, and an admin client certificate. */
export async function certsInit(nodes: readonly NodeAddr[], dir: string): Promise<string[]> {
  if (existsSync(join(dir, CA_FILE)) || existsSync(join(dir, CA_KEY_FILE))) {
    throw new CertsError(`${dir} already holds a cluster CA; refusing to replace it (add clients with \`raftkv certs client\`, or choose another --out)`);
  }
  mkdirSync(dir, { recursive: true });
  const ca = await createCa();
  const written = writePair(dir, "ca", ca.pem);
  for (const n of nodes) {
    const pair = await issueCertificate(ca, { cn: nodeCertName(n.id), ou: "node", addresses: [n.host] });
    written.push(...writePair(dir, nodeCertName(n.id), pair));
  }
  written.push(...writePair(dir, "admin", await issueCertificate(ca, { cn: "admin", ou: "admin" })));
  return written;
}

/** `raftkv certs client NAME --role R`: one more client certificate from the CA in dir. */
export async function certsClient(dir: string, name: string, role: string, validDays = CERT_VALID_DAYS): Promise<string[]> {
  if (!CLIENT_NAME.test(name) || /^node-\d+$/.test(name) || name === "ca") {
    throw new CertsError(`bad client name ${JSON.stringify(name)}: letters, digits, '.', '_' and '-' (not "ca" or node-N)`);
  }
  if (!(CLIENT_ROLES as readonly string[]).includes(role)) {
    throw new CertsError(`bad role ${JSON.stringify(role)}: one of ${CLIENT_ROLES.join(", ")}`);
  }
  return writePair(dir, name, await issueCertificateFromDir(dir, { cn: name, ou: role as ClientRole }, validDays));
}

export function registerCerts(cli: CAC): void {
  cli
    .command("certs <action> [arg]", "TLS certificates: `certs init [config]` makes a cluster CA, node and admin certificates; `certs client NAME --role R` adds a client")
    .option("--out <dir>", "init: where to write the certificates", { default: "certs" })
    .option("--certs <dir>", "client: the certs directory holding the cluster CA", { default: "certs" })
    .option("--role <role>", "client: read (get, range, watch, status), write (also put, del, cas, txn, leases, lock, elect) or admin (everything)")
    .example("raftkv certs init nodes.conf              # writes certs/: ca.pem ca.key node-<id>.pem/.key admin.pem/.key")
    .example("raftkv certs client reporting --role read # writes certs/reporting.pem and certs/reporting.key")
    .action((action: string, arg: string | undefined, flags: { out: string; certs: string; role?: string }) =>
      run(async () => {
        let written: string[];
        let dir: string;
        if (action === "init") {
          dir = String(flags.out);
          written = await certsInit(loadNodesConf(arg ?? "nodes.conf"), dir);
        } else if (action === "client") {
          if (!arg) throw new UsageError("usage: raftkv certs client NAME --role read|write|admin [--certs DIR]");
          if (!flags.role) throw new UsageError(`--role is required: one of ${CLIENT_ROLES.join(", ")}`);
          dir = String(flags.certs);
          written = await certsClient(dir, arg, String(flags.role));
        } else {
          throw new UsageError(`unknown certs action ${JSON.stringify(action)}: init or client`);
        }
        console.log(`wrote ${written.map((f) => join(dir, f)).join(" ")}`);
      }),
    );
}
