import { describe, expect, it } from 'vitest';
import {
  BadRequestError,
  ClosedError,
  errorClasses,
  errorTable,
  HadbError,
  type HadbErrorCode,
  httpStatusOf,
  InternalError,
  revivedError,
  UnauthorizedError,
} from '../../src/errors.ts';
import {
  encodeMessage,
  type ForwardErrorCode,
  type ForwardResponse,
  forwardAnswerStatus,
  readForwardAnswer,
} from '../../src/wire/forward.ts';
import { codeOfTextAnswer, thrownErrorStatus } from '../../src/wire/node-protocol.ts';

// One table says each code's class and HTTP status; the answering node and the asking node both
// read it, so what one sends the other reads back as the same error.

const codes = Object.keys(errorTable) as HadbErrorCode[];

/** The statuses a leader has always answered forwards with: older nodes read them so. */
const FORWARD_STATUSES = {
  NOT_LEADER: 409,
  FENCED: 409,
  STATEMENT_TIMEOUT: 409,
  RESULT_TOO_LARGE: 409,
  SQL_ERROR: 422,
  INVALID_ARGUMENT: 422,
  STATEMENT_REFUSED: 422,
  UNKNOWN_DATABASE: 404,
  INTERNAL: 503,
} satisfies Record<ForwardErrorCode, number>;

const PEER = 'http://10.0.0.1:7070';

describe('the code, HTTP status and class table', () => {
  it('gives every code a class and an HTTP error status', () => {
    expect(Object.keys(errorClasses).sort()).toEqual([...codes].sort());
    for (const code of codes) {
      expect(errorClasses[code]).toBe(errorTable[code].class);
      expect(httpStatusOf(code)).toBeGreaterThanOrEqual(400);
      expect(httpStatusOf(code)).toBeLessThan(600);
    }
  });

  it.each(codes)('%s comes back as its class, with the status of its code', (code) => {
    const revived = revivedError(code, 'said elsewhere');
    expect(revived).toBeInstanceOf(errorTable[code].class);
    expect(revived).toBeInstanceOf(HadbError);
    expect(revived.message).toBe(`${code}: said elsewhere`);
    expect(httpStatusOf(revived.code)).toBe(errorTable[code].status);
  });
});

describe('forward answers', () => {
  it.each(Object.entries(FORWARD_STATUSES) as [ForwardErrorCode, number][])(
    '%s is answered %i and read back as sent',
    (code, status) => {
      const sent: ForwardResponse = { ok: false, code, message: 'why' };
      expect(forwardAnswerStatus(sent)).toBe(status);
      expect(readForwardAnswer(status, encodeMessage(sent), PEER)).toEqual(sent);
    },
  );

  it('answers a success 200, read back as sent', () => {
    const sent: ForwardResponse = { ok: true, results: [], token: { epoch: 2, seq: 9 } };
    expect(forwardAnswerStatus(sent)).toBe(200);
    expect(readForwardAnswer(200, encodeMessage(sent), PEER)).toEqual(sent);
  });
});

describe('errors a route throws, answered as text', () => {
  const text = (error: Error) => Buffer.from(error.message);

  it('a malformed request: 400, thrown again at the sender as a BadRequestError', () => {
    const error = new BadRequestError('op must be write, read, schema or migrate');
    const status = thrownErrorStatus(error);
    expect(status).toBe(400);
    expect(codeOfTextAnswer(status)).toBe('BAD_REQUEST');
    const read = () => readForwardAnswer(status, text(error), PEER);
    expect(read).toThrow(BadRequestError);
    // The code once, in front: the listener's text carried it too.
    expect(read).toThrow(`BAD_REQUEST: ${PEER}: op must be write, read, schema or migrate`);
  });

  it('a wrong secret: 401, thrown again at the sender as an UnauthorizedError', () => {
    const status = thrownErrorStatus(new UnauthorizedError('no secret'));
    expect(status).toBe(401);
    const read = () => readForwardAnswer(status, Buffer.from('no'), PEER);
    expect(read).toThrow(UnauthorizedError);
    expect(read).toThrow(`UNAUTHORIZED: ${PEER} refused the cluster secret`);
  });

  it.each([
    new ClosedError('database orders'),
    new InternalError('an invariant broke'),
    new TypeError('x is undefined'),
  ])('anything else (%s) is a failed route: 500, read as an INTERNAL answer', (error) => {
    const status = thrownErrorStatus(error);
    expect(status).toBe(500);
    expect(readForwardAnswer(status, text(error), PEER)).toEqual({
      ok: false,
      code: 'INTERNAL',
      message: error.message,
    });
  });

  it('reads a 5xx from whatever stood between as INTERNAL, but not the 503 INTERNAL answer', () => {
    expect(codeOfTextAnswer(502)).toBe('INTERNAL');
    expect(codeOfTextAnswer(httpStatusOf('INTERNAL'))).toBeNull();
    expect(codeOfTextAnswer(409)).toBeNull();
  });
});
