import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../../src/errors.ts';
import {
  decodeNodeTailQuery,
  decodeTailQuery,
  encodeNodeTailQuery,
  encodeTailQuery,
  type NodeTailQuery,
  type TailQuery,
} from '../../src/wire/node-protocol.ts';

// The tail's query strings: what one node writes, the other reads back as it was.

const params = (query: string) => new URL(`http://node/hadb/v1/tail?${query}`).searchParams;

describe('the tail query', () => {
  it.each<TailQuery>([
    { db: 'orders', after: 0, from: null },
    { db: 'orders', after: 42, from: 'http://10.0.0.2:7070' },
    { db: 'a b&c=d/é%', after: Number.MAX_SAFE_INTEGER, from: 'http://[::1]:80/?x=1&y' },
  ])('round-trips %j', (query) => {
    expect(decodeTailQuery(params(encodeTailQuery(query)))).toEqual(query);
  });

  it('leaves out an empty from, as a node without an address sends none', () => {
    expect(encodeTailQuery({ db: 'x', after: 1, from: '' })).toBe('db=x&after=1');
    expect(decodeTailQuery(params('db=x&after=1')).from).toBeNull();
  });

  it('reads the query as nodes built it by hand before', () => {
    const name = 'a b&c';
    const from = 'http://10.0.0.2:7070';
    const old = `db=${encodeURIComponent(name)}&after=7&from=${encodeURIComponent(from)}`;
    expect(decodeTailQuery(params(old))).toEqual({ db: name, after: 7, from });
  });

  it('takes a missing after as 0 and a missing db as the empty name', () => {
    expect(decodeTailQuery(params(''))).toEqual({ db: '', after: 0, from: null });
  });

  it.each(['abc', '-1', '1.5', '1e400', '9007199254740992'])(
    'refuses after=%s as a bad request',
    (after) => {
      const decode = () => decodeTailQuery(params(`db=x&after=${after}`));
      expect(decode).toThrow(BadRequestError);
      expect(decode).toThrow('BAD_REQUEST: after must be a sequence number');
    },
  );
});

describe('the node tail query', () => {
  it.each<NodeTailQuery>([
    { after: 0, session: '', from: null },
    { after: 12, session: 'f3a9-01', from: 'http://10.0.0.3:7070' },
    { after: 3, session: 'a+b c&d', from: null },
  ])('round-trips %j', (query) => {
    expect(decodeNodeTailQuery(params(encodeNodeTailQuery(query)))).toEqual(query);
  });

  it('sends an empty session, and no from when there is none', () => {
    expect(encodeNodeTailQuery({ after: 0, session: '', from: null })).toBe('after=0&session=');
  });

  it('takes a missing after as 0 and a missing session as the empty one', () => {
    expect(decodeNodeTailQuery(params('from=http%3A%2F%2Fh%3A1'))).toEqual({
      after: 0,
      session: '',
      from: 'http://h:1',
    });
  });

  it.each(['NaN', '-3', '0.5', 'x1'])('refuses after=%s as a bad request', (after) => {
    const decode = () => decodeNodeTailQuery(params(`after=${after}&session=s`));
    expect(decode).toThrow(BadRequestError);
    expect(decode).toThrow('BAD_REQUEST: after must be a cursor');
  });
});
