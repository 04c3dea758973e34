// HTTPS_PROXY / HTTP_PROXY / NO_PROXY with Go's httpproxy rules (what docker does). Pure parsing.
import { describe, expect, it } from 'vitest';
import { parseProxyUrl, proxyEnvFrom, proxyFromEnvironment, proxyResolver } from '../src/index.js';

const P = 'http://proxy.corp:3128/';
const via = (env: Record<string, string>, url: string) => proxyFromEnvironment(env)(new URL(url))?.href;

describe('proxyEnvFrom', () => {
  it('upper case wins over lower case; empty counts as unset', () => {
    expect(proxyEnvFrom({ HTTPS_PROXY: 'a:1', https_proxy: 'b:1' }).httpsProxy).toBe('a:1');
    expect(proxyEnvFrom({ HTTPS_PROXY: '', https_proxy: 'b:1' }).httpsProxy).toBe('b:1');
    expect(proxyEnvFrom({ no_proxy: 'x' }).noProxy).toBe('x');
    expect(proxyEnvFrom({}).httpProxy).toBeUndefined();
  });
  it('ignores HTTP_PROXY under CGI (REQUEST_METHOD set), as Go does', () => {
    expect(proxyEnvFrom({ HTTP_PROXY: 'a:1', REQUEST_METHOD: 'GET' }).httpProxy).toBeUndefined();
    expect(proxyEnvFrom({ HTTPS_PROXY: 'a:1', REQUEST_METHOD: 'GET' }).httpsProxy).toBe('a:1');
  });
});

describe('proxy per URL', () => {
  it('HTTPS_PROXY for https, HTTP_PROXY for http, no proxy without the variable', () => {
    const env = { HTTPS_PROXY: 'proxy.corp:3128', HTTP_PROXY: 'http://p2:8080' };
    expect(via(env, 'https://registry.example.com/v2/')).toBe(P);
    expect(via(env, 'http://registry.example.com/v2/')).toBe('http://p2:8080/');
    expect(via({ HTTP_PROXY: 'http://p2:8080' }, 'https://r.example.com/')).toBeUndefined();
  });

  it('never proxies localhost and loopback IPs (v4, v6, v4-mapped), whatever NO_PROXY says', () => {
    const env = { HTTPS_PROXY: P, HTTP_PROXY: P };
    for (const u of [
      'https://localhost:5000/',
      'https://127.0.0.1:5000/',
      'http://127.9.8.7/',
      'https://[::1]:5000/',
      'https://[::ffff:127.0.0.1]/',
    ])
      expect(via(env, u), u).toBeUndefined();
    // Go compares "localhost" exactly: other names are proxied even when they resolve to 127.0.0.1
    expect(via(env, 'https://localhost.localdomain/')).toBe(P);
    expect(via(env, 'https://localhost./')).toBe(P);
    expect(via(env, 'https://10.1.2.3/')).toBe(P);
  });

  it('NO_PROXY: hosts match themselves and subdomains; .domain and *.domain subdomains only', () => {
    const env = { HTTPS_PROXY: P, NO_PROXY: 'example.com, .internal,*.corp.test' };
    expect(via(env, 'https://example.com/')).toBeUndefined();
    expect(via(env, 'https://a.b.example.com/')).toBeUndefined();
    expect(via(env, 'https://EXAMPLE.com./')).toBeUndefined();
    expect(via(env, 'https://notexample.com/')).toBe(P);
    expect(via(env, 'https://reg.internal/')).toBeUndefined();
    expect(via(env, 'https://internal/')).toBe(P);
    expect(via(env, 'https://x.corp.test/')).toBeUndefined();
    expect(via(env, 'https://corp.test/')).toBe(P);
  });

  it('NO_PROXY: host:port matches that port only (the default port of the scheme counts)', () => {
    const env = { HTTPS_PROXY: P, NO_PROXY: 'reg.example.com:5000,other.example.com:443' };
    expect(via(env, 'https://reg.example.com:5000/')).toBeUndefined();
    expect(via(env, 'https://reg.example.com/')).toBe(P);
    expect(via(env, 'https://other.example.com/')).toBeUndefined();
    expect(via(env, 'https://other.example.com:8443/')).toBe(P);
  });

  it('NO_PROXY: IPs (with port, v6 in brackets) and CIDRs', () => {
    const env = { HTTPS_PROXY: P, NO_PROXY: '10.0.0.0/8,192.168.1.5,[fd00::1]:5000,2001:db8::/32' };
    expect(via(env, 'https://10.200.3.4/')).toBeUndefined();
    expect(via(env, 'https://11.0.0.1/')).toBe(P);
    expect(via(env, 'https://192.168.1.5:444/')).toBeUndefined();
    expect(via(env, 'https://192.168.1.6/')).toBe(P);
    expect(via(env, 'https://[fd00::1]:5000/')).toBeUndefined();
    expect(via(env, 'https://[fd00:0::1]:5001/')).toBe(P);
    expect(via(env, 'https://[2001:db8:1::9]/')).toBeUndefined();
    // a CIDR does not match names
    expect(via(env, 'https://ten.example/')).toBe(P);
  });

  it('NO_PROXY=* (anywhere in the list) turns proxying off; blanks are ignored', () => {
    expect(via({ HTTPS_PROXY: P, NO_PROXY: '*' }, 'https://example.com/')).toBeUndefined();
    expect(via({ HTTPS_PROXY: P, NO_PROXY: 'a.com,*' }, 'https://example.com/')).toBeUndefined();
    expect(via({ HTTPS_PROXY: P, NO_PROXY: ' , ,' }, 'https://example.com/')).toBe(P);
  });
});

describe('proxy addresses', () => {
  it('accepts http, https, socks5 and bare host:port; keeps credentials', () => {
    expect(parseProxyUrl('proxy:3128').href).toBe('http://proxy:3128/');
    expect(parseProxyUrl('https://u:p@proxy/').href).toBe('https://u:p@proxy/');
    expect(parseProxyUrl('socks5://127.0.0.1:1080').protocol).toBe('socks5:');
  });
  it('refuses what is not a proxy address, naming the variable', () => {
    expect(() => proxyResolver({ httpsProxy: 'ftp://proxy/' })).toThrow(/HTTPS_PROXY: invalid proxy address "ftp/);
    expect(() => proxyResolver({ httpProxy: 'http://proxy/path' })).toThrow(/HTTP_PROXY: invalid proxy address/);
    expect(() => proxyResolver({ httpProxy: 'http://[::bad' })).toThrow(/HTTP_PROXY/);
  });
});
