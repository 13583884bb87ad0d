import { afterEach, beforeEach, describe, expect, it, type Mock, vi } from 'vitest';
import { type Actor, assign, createActor, setup } from 'xstate';
import {
  type RestartPolicy,
  Supervisor,
  type SupervisorEvent,
} from '../../src/actors/supervisor.ts';
import { InvalidArgumentError } from '../../src/errors.ts';
import { SimClock } from '../../src/sim/clock.ts';

const drain = () => new Promise<void>((resolve) => setImmediate(resolve));
const realDelay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Fails fast instead of hanging the test when `promise` does not settle without simulated time. */
function promptly<T>(promise: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    promise,
    realDelay(1000).then(() => {
      throw new Error(`${what} did not settle`);
    }),
  ]);
}

type WorkerEvent = { type: 'boom' } | { type: 'stop' } | { type: 'inc' };

/** Counts `inc`; throws from an action on `boom`; finishes on `stop`, recording that it saw it. */
function workerMachine(log: string[] = []) {
  return setup({
    types: { context: {} as { count: number }, events: {} as WorkerEvent },
    actions: {
      explode: () => {
        throw new Error('boom');
      },
      noteStop: () => {
        log.push('stop received');
      },
    },
  }).createMachine({
    context: { count: 0 },
    initial: 'running',
    states: {
      running: {
        on: {
          boom: { actions: 'explode' },
          inc: { actions: assign({ count: ({ context }) => context.count + 1 }) },
          stop: { target: 'done', actions: 'noteStop' },
        },
      },
      done: { type: 'final' },
    },
  });
}

/** Takes 50 ms (of the given clock) to finish after `stop`. */
const slowStopper = setup({ types: { events: {} as WorkerEvent } }).createMachine({
  initial: 'running',
  states: {
    running: { on: { stop: 'stopping' } },
    stopping: { after: { 50: 'done' } },
    done: { type: 'final' },
  },
});

/** Never finishes: ignores `stop`. */
const stubborn = setup({ types: { events: {} as WorkerEvent } }).createMachine({
  initial: 'running',
  states: { running: { on: { inc: {} } } },
});

/** Throws from its entry action, so it crashes as it starts. */
const crashOnStart = setup({
  types: { events: {} as WorkerEvent },
  actions: {
    explode: () => {
      throw new Error('crash on start');
    },
  },
}).createMachine({ initial: 'running', states: { running: { entry: 'explode' } } });

type Worker = Actor<ReturnType<typeof workerMachine>>;

describe('supervisor', () => {
  let clock: SimClock;
  let events: SupervisorEvent[];
  let uncaught: Mock<(error: Error) => void>;

  beforeEach(() => {
    clock = new SimClock();
    events = [];
    uncaught = vi.fn<(error: Error) => void>();
    process.on('uncaughtException', uncaught);
  });

  afterEach(() => {
    process.off('uncaughtException', uncaught);
  });

  function supervisor(restart: Partial<RestartPolicy> = {}, stopTimeoutMs?: number) {
    return new Supervisor<Worker>({
      clock,
      restart,
      onEvent: (event) => events.push(event),
      ...(stopTimeoutMs === undefined ? {} : { stopTimeoutMs }),
    });
  }

  /** A factory that counts its calls and hands out actors on the simulated clock. */
  function factory(machine = workerMachine()) {
    const made: Worker[] = [];
    return {
      made,
      create: () => {
        const actor = createActor(machine, { clock });
        made.push(actor);
        return actor;
      },
    };
  }

  const crashed = () =>
    events.flatMap((event) => (event.type === 'crashed' ? [event.restartInMs] : []));

  it('starts an actor and delivers events to it', () => {
    const sup = supervisor();
    const { create, made } = factory();
    const actor = sup.start('w', create);
    expect(made).toEqual([actor]);
    expect(actor.getSnapshot().status).toBe('active');
    expect(sup.get('w')).toBe(actor);
    expect(sup.status('w')).toBe('running');
    expect(sup.names()).toEqual(['w']);
    expect(sup.size).toBe(1);
    expect(sup.send('w', { type: 'inc' })).toBe(true);
    expect(actor.getSnapshot().context.count).toBe(1);
  });

  it('send returns false for an unknown name', () => {
    const sup = supervisor();
    expect(sup.send('nobody', { type: 'inc' })).toBe(false);
    expect(sup.get('nobody')).toBeUndefined();
    expect(sup.status('nobody')).toBeUndefined();
  });

  it('start with a duplicate name throws InvalidArgumentError and keeps the first actor', () => {
    const sup = supervisor();
    const first = factory();
    const second = factory();
    const actor = sup.start('w', first.create);
    expect(() => sup.start('w', second.create)).toThrow(InvalidArgumentError);
    expect(() => sup.start('w', second.create)).toThrow(/"w" is already supervised/);
    expect(second.made).toEqual([]);
    expect(sup.get('w')).toBe(actor);
    expect(sup.size).toBe(1);
  });

  it('restarts a crashed actor after the initial delay, with a fresh instance', async () => {
    const sup = supervisor({ initialDelayMs: 100 });
    const { create, made } = factory();
    const first = sup.start('w', create);
    sup.send('w', { type: 'inc' });
    expect(sup.send('w', { type: 'boom' })).toBe(true);
    expect(first.getSnapshot().status).toBe('error');
    expect(sup.status('w')).toBe('restarting');
    expect(sup.get('w')).toBeUndefined();
    expect(sup.send('w', { type: 'inc' })).toBe(false);
    expect(events).toEqual([
      {
        type: 'crashed',
        name: 'w',
        error: expect.objectContaining({ message: 'boom' }),
        restartInMs: 100,
      },
    ]);

    await clock.runUntil(99, drain);
    expect(made).toHaveLength(1);
    expect(sup.status('w')).toBe('restarting');

    await clock.runUntil(100, drain);
    expect(made).toHaveLength(2);
    const second = sup.get('w');
    expect(second).toBe(made[1]);
    expect(second).not.toBe(first);
    expect(second?.getSnapshot().status).toBe('active');
    expect(second?.getSnapshot().context.count).toBe(0);
    expect(sup.status('w')).toBe('running');
    expect(events.at(-1)).toEqual({ type: 'restarted', name: 'w' });
  });

  it('doubles the delay for each crash inside the window, up to maxDelayMs', async () => {
    const sup = supervisor({
      initialDelayMs: 100,
      maxDelayMs: 700,
      maxCrashes: 10,
      windowMs: 60_000,
    });
    const { create, made } = factory();
    sup.start('w', create);
    const restartedAt: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = clock.now();
      sup.send('w', { type: 'boom' });
      const delay = crashed().at(-1) ?? 0;
      await clock.runUntil(before + delay, drain);
      restartedAt.push(clock.now() - before);
      expect(sup.status('w')).toBe('running');
    }
    expect(crashed()).toEqual([100, 200, 400, 700, 700]);
    expect(restartedAt).toEqual([100, 200, 400, 700, 700]);
    expect(made).toHaveLength(6);
    expect(new Set(made).size).toBe(6);
  });

  it('gives up past maxCrashes within the window and does not restart', async () => {
    const sup = supervisor({ initialDelayMs: 100, maxCrashes: 3, windowMs: 10_000 });
    const { create, made } = factory();
    sup.start('w', create);
    for (let i = 0; i < 3; i++) {
      sup.send('w', { type: 'boom' });
      await clock.runUntil(clock.now() + 1000, drain);
    }
    expect(crashed()).toEqual([100, 200, 400]);
    expect(made).toHaveLength(4);
    sup.send('w', { type: 'boom' });
    expect(sup.status('w')).toBe('failed');
    expect(events.at(-1)).toEqual({
      type: 'gave-up',
      name: 'w',
      error: expect.objectContaining({ message: 'boom' }),
      crashes: 4,
    });
    await clock.runUntil(clock.now() + 100_000, drain);
    expect(made).toHaveLength(4);
    expect(sup.status('w')).toBe('failed');
    expect(sup.get('w')).toBeUndefined();
    expect(sup.send('w', { type: 'inc' })).toBe(false);
    expect(events.filter((e) => e.type === 'restarted')).toHaveLength(3);
    expect(clock.pendingTimers).toBe(0);
  });

  it('forgets crashes older than the window', async () => {
    const sup = supervisor({ initialDelayMs: 100, maxCrashes: 2, windowMs: 1000 });
    const { create, made } = factory();
    sup.start('w', create);
    for (let i = 0; i < 8; i++) {
      sup.send('w', { type: 'boom' });
      await clock.runUntil(clock.now() + 1000, drain);
      expect(sup.status('w')).toBe('running');
    }
    expect(crashed()).toEqual(Array(8).fill(100));
    expect(events.some((e) => e.type === 'gave-up')).toBe(false);
    expect(made).toHaveLength(9);
  });

  it('counts crashes inside the window even when spaced by restarts', async () => {
    const sup = supervisor({ initialDelayMs: 100, maxCrashes: 2, windowMs: 1000 });
    const { create } = factory();
    sup.start('w', create);
    sup.send('w', { type: 'boom' }); // t=0
    await clock.runUntil(400, drain);
    sup.send('w', { type: 'boom' }); // t=400: 2 crashes in the window
    await clock.runUntil(999, drain);
    sup.send('w', { type: 'boom' }); // t=999: 3 crashes in the window
    expect(crashed()).toEqual([100, 200]);
    expect(sup.status('w')).toBe('failed');
  });

  it('restarts an actor that crashes as it starts, and gives up on it', async () => {
    const sup = new Supervisor<Actor<typeof crashOnStart>>({
      clock,
      restart: { initialDelayMs: 10, maxCrashes: 2 },
      onEvent: (event) => events.push(event),
    });
    let made = 0;
    sup.start('w', () => {
      made += 1;
      return createActor(crashOnStart, { clock });
    });
    expect(sup.status('w')).toBe('restarting');
    await clock.runUntil(1000, drain);
    expect(made).toBe(3);
    expect(crashed()).toEqual([10, 20]);
    expect(sup.status('w')).toBe('failed');
    await realDelay(20);
    expect(uncaught).not.toHaveBeenCalled();
  });

  it('never lets the error escape as an uncaught exception', async () => {
    const sup = supervisor({ initialDelayMs: 100, maxCrashes: 1 });
    const { create } = factory();
    sup.start('w', create);
    sup.send('w', { type: 'boom' });
    await clock.runUntil(100, drain);
    sup.send('w', { type: 'boom' }); // gives up
    expect(sup.status('w')).toBe('failed');
    await realDelay(20);
    expect(uncaught).not.toHaveBeenCalled();
  });

  it('stop sends stop and resolves when the actor reaches its final state', async () => {
    const sup = new Supervisor<Actor<typeof slowStopper>>({
      clock,
      stopTimeoutMs: 1000,
      onEvent: (event) => events.push(event),
    });
    const actor = sup.start('w', () => createActor(slowStopper, { clock }));
    let stopped = false;
    const stopping = sup.stop('w').then(() => {
      stopped = true;
    });
    expect(actor.getSnapshot().value).toBe('stopping');
    expect(sup.status('w')).toBeUndefined();
    expect(sup.size).toBe(0);
    await clock.runUntil(49, drain);
    expect(stopped).toBe(false);
    await clock.runUntil(50, drain);
    await stopping;
    expect(stopped).toBe(true);
    expect(actor.getSnapshot().status).toBe('done');
    expect(events).toEqual([]);
  });

  it('stop of an actor that finishes at once resolves without advancing time', async () => {
    const sup = supervisor({}, 1000);
    const log: string[] = [];
    const { create } = factory(workerMachine(log));
    const actor = sup.start('w', create);
    await promptly(sup.stop('w'), 'stop');
    expect(log).toEqual(['stop received']);
    expect(actor.getSnapshot().status).toBe('done');
    expect(clock.now()).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('cuts a stop short after stopTimeoutMs and reports it', async () => {
    const sup = new Supervisor<Actor<typeof stubborn>>({
      clock,
      stopTimeoutMs: 500,
      onEvent: (event) => events.push(event),
    });
    const actor = sup.start('w', () => createActor(stubborn, { clock }));
    let completed = 0;
    actor.subscribe({ complete: () => completed++ });
    let stopped = false;
    const stopping = sup.stop('w').then(() => {
      stopped = true;
    });
    await clock.runUntil(499, drain);
    expect(stopped).toBe(false);
    expect(events).toEqual([]);
    await clock.runUntil(500, drain);
    await stopping;
    expect(stopped).toBe(true);
    expect(events).toEqual([{ type: 'stop-timed-out', name: 'w', timeoutMs: 500 }]);
    expect(completed).toBe(1); // the actor itself was stopped
    expect(actor.getSnapshot().status).toBe('stopped');
  });

  it('stop of an unknown name resolves', async () => {
    await expect(supervisor().stop('nobody')).resolves.toBeUndefined();
  });

  it('stop during a pending restart cancels the restart', async () => {
    const sup = supervisor({ initialDelayMs: 100 });
    const { create, made } = factory();
    sup.start('w', create);
    sup.send('w', { type: 'boom' });
    expect(clock.pendingTimers).toBe(1);
    await promptly(sup.stop('w'), 'stop');
    expect(clock.pendingTimers).toBe(0);
    await clock.runUntil(10_000, drain);
    expect(made).toHaveLength(1);
    expect(sup.size).toBe(0);
    expect(events.filter((e) => e.type === 'restarted')).toEqual([]);
  });

  it('killAll stops every actor without sending stop', async () => {
    const log: string[] = [];
    const sup = supervisor({ initialDelayMs: 100 });
    const { create, made } = factory(workerMachine(log));
    let completed = 0;
    for (const name of ['a', 'b', 'c']) {
      sup.start(name, create).subscribe({ complete: () => completed++, error: () => {} });
    }
    sup.send('c', { type: 'boom' }); // c waits for a restart
    sup.killAll();
    expect(sup.size).toBe(0);
    expect(sup.names()).toEqual([]);
    expect(completed).toBe(2);
    expect(log).toEqual([]);
    expect(made.map((actor) => actor.getSnapshot().status)).toEqual([
      'stopped',
      'stopped',
      'error',
    ]);
    await clock.runUntil(10_000, drain);
    expect(made).toHaveLength(3);
    expect(log).toEqual([]);
  });

  it('starts and stops 1000 actors', async () => {
    const sup = supervisor();
    const { create, made } = factory();
    for (let i = 0; i < 1000; i++) sup.start(`db${i}`, create);
    expect(sup.size).toBe(1000);
    expect(sup.send('db999', { type: 'inc' })).toBe(true);
    await promptly(sup.stopAll(), 'stopAll');
    expect(sup.size).toBe(0);
    expect(made).toHaveLength(1000);
    expect(made.every((actor) => actor.getSnapshot().status === 'done')).toBe(true);
  });

  it('reports snapshots with the actor name', () => {
    const seen: [string, number][] = [];
    const sup = new Supervisor<Worker>({
      clock,
      onSnapshot: (name, snapshot) => seen.push([name, snapshot.context.count]),
    });
    sup.start('w', factory().create);
    sup.send('w', { type: 'inc' });
    sup.send('w', { type: 'inc' });
    expect(seen.at(-1)).toEqual(['w', 2]);
    expect(seen.every(([name]) => name === 'w')).toBe(true);
  });
});

describe('Supervisor factory failures', () => {
  it('counts a factory that throws on restart as a crash instead of letting it escape', async () => {
    const clock = new SimClock();
    const machine = setup({
      actions: {
        explode: () => {
          throw new Error('boom');
        },
      },
    }).createMachine({ on: { boom: { actions: 'explode' } } });
    const events: SupervisorEvent[] = [];
    const supervisor = new Supervisor<Actor<typeof machine>>({
      clock,
      restart: { initialDelayMs: 10, maxCrashes: 3 },
      onEvent: (event) => events.push(event),
    });
    let made = 0;
    supervisor.start('w', () => {
      made += 1;
      if (made > 1) throw new Error('factory failed');
      return createActor(machine, { clock });
    });
    supervisor.send('w', { type: 'boom' });
    await expect(clock.runUntil(1000, drain)).resolves.toBeUndefined();
    expect(supervisor.status('w')).toBe('failed');
    expect(events.at(-1)).toMatchObject({ type: 'gave-up', name: 'w' });
  });

  it('does not keep a name whose first start failed', () => {
    const idle = setup({}).createMachine({});
    const supervisor = new Supervisor<Actor<typeof idle>>();
    expect(() =>
      supervisor.start('x', () => {
        throw new Error('cannot build');
      }),
    ).toThrow('cannot build');
    expect(supervisor.status('x')).toBeUndefined();
  });
});
