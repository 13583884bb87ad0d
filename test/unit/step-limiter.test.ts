import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/errors.ts';
import { StepLimiter } from '../../src/runtime/step-limiter.ts';

describe('step limiter (heavy role-change steps of a node)', () => {
  it('runs at most `limit` steps at once, in arrival order, and settles as each step does', async () => {
    const limiter = new StepLimiter(2);
    const releases = new Map<number, () => void>();
    const started: number[] = [];
    const steps = Array.from({ length: 5 }, (_, i) =>
      limiter.run(
        () =>
          new Promise<number>((resolve) => {
            started.push(i);
            releases.set(i, () => resolve(i * 10));
          }),
      ),
    );
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual([0, 1]);
    expect(limiter.running).toBe(2);
    expect(limiter.queued).toBe(3);
    releases.get(1)?.();
    await expect(steps[1]).resolves.toBe(10);
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual([0, 1, 2]);
    for (const i of [0, 2, 3, 4]) {
      await new Promise((resolve) => setImmediate(resolve));
      releases.get(i)?.();
    }
    await expect(Promise.all(steps)).resolves.toEqual([0, 10, 20, 30, 40]);
    expect(limiter.running).toBe(0);
  });

  it('lets timers and other callbacks run between steps', async () => {
    const limiter = new StepLimiter(1);
    const events: string[] = [];
    const busy = (name: string) => async () => {
      events.push(name);
      const until = performance.now() + 5;
      while (performance.now() < until) {
        // Synchronous work, like opening SQLite files.
      }
    };
    const steps = [limiter.run(busy('a')), limiter.run(busy('b'))];
    setImmediate(() => events.push('other'));
    await Promise.all(steps);
    expect(events).toEqual(['a', 'other', 'b']);
  });

  it('frees the slot of a step that fails', async () => {
    const limiter = new StepLimiter(1);
    await expect(
      limiter.run(async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    await expect(limiter.run(async () => 'next')).resolves.toBe('next');
    expect(limiter.running).toBe(0);
  });

  it('passes the turn of a step no longer wanted without running it', async () => {
    const limiter = new StepLimiter(1);
    let release: () => void = () => {};
    const first = limiter.run(() => new Promise<void>((resolve) => (release = resolve)));
    let leads = true;
    let ran = false;
    const stale = limiter.run(
      async () => {
        ran = true;
        return 'ran';
      },
      () => leads,
    );
    const next = limiter.run(async () => 'next');
    await new Promise((resolve) => setImmediate(resolve));
    leads = false;
    release();
    await first;
    await expect(stale).resolves.toBeUndefined();
    expect(ran).toBe(false);
    await expect(next).resolves.toBe('next');
  });

  it('refuses a limit below one', () => {
    expect(() => new StepLimiter(0)).toThrow(InvalidArgumentError);
  });
});
