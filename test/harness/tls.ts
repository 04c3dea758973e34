// Test PKI with the openssl CLI: a throwaway CA and one server certificate signed by it.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bins } from './bins.js';
import { makeTempDir } from './cleanup.js';
import { run } from './exec.js';

export interface TlsMaterials {
  dir: string;
  caCertPath: string;
  caKeyPath: string;
  certPath: string;
  keyPath: string;
  /** The CA certificate, PEM. */
  caPem: string;
}

export interface TlsOptions {
  /** Write into this directory (created if missing); default: a new tracked temp dir. */
  dir?: string;
  /** Subject alternative names. Default: IP 127.0.0.1 and DNS localhost. */
  ips?: string[];
  dnsNames?: string[];
  /** Validity in days. Default 2. */
  days?: number;
}

/**
 * Create a CA and a server certificate for loopback. EC P-256 keeps key generation instant.
 * The leaf carries serverAuth EKU and SANs (CN is ignored by modern verifiers), and the CA
 * carries basicConstraints CA:true so OpenSSL/Node/Go all accept it as an issuer.
 */
export async function createTlsMaterials(opts: TlsOptions = {}): Promise<TlsMaterials> {
  const dir = opts.dir ?? makeTempDir('tls');
  await mkdir(dir, { recursive: true });
  const days = String(opts.days ?? 2);
  const p = (f: string) => path.join(dir, f);
  const ips = opts.ips ?? ['127.0.0.1'];
  const dnsNames = opts.dnsNames ?? ['localhost'];
  const san = [...ips.map((i) => `IP:${i}`), ...dnsNames.map((d) => `DNS:${d}`)].join(',');
  const ssl = (args: string[]) => run(bins.openssl, args, { cwd: dir });

  await ssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p('ca.key')]);
  // biome-ignore format: option/value pairs
  await ssl([
    'req', '-x509', '-new', '-key', p('ca.key'), '-sha256', '-days', days,
    '-subj', '/CN=stevedore test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', p('ca.crt'),
  ]);

  await ssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p('server.key')]);
  await ssl(['req', '-new', '-key', p('server.key'), '-subj', '/CN=localhost', '-out', p('server.csr')]);
  await writeFile(
    p('server.ext'),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${san}`,
      '',
    ].join('\n'),
  );
  // biome-ignore format: option/value pairs
  await ssl([
    'x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-sha256', '-days', days, '-extfile', p('server.ext'), '-out', p('server.crt'),
  ]);

  return {
    dir,
    caCertPath: p('ca.crt'),
    caKeyPath: p('ca.key'),
    certPath: p('server.crt'),
    keyPath: p('server.key'),
    caPem: await readFile(p('ca.crt'), 'utf8'),
  };
}
