import { Command, InvalidArgumentError, Option } from 'commander';
import { redactUrlsIn } from '../redact.ts';
import { runSimulation, type SimulationSummary } from '../sim/run.ts';
import { registerOperationsCommands } from './commands/index.ts';
import { runDemo } from './demo.ts';
import { inspectOption, inspectUrlOption, transitionsOption } from './observe.ts';
import { registerServeCommand } from './serve.ts';
import { packageVersion } from './version.ts';
import { reportFatal, runWorker } from './worker.ts';

/** Exit codes: 0 ok, 1 an invariant was violated, 2 bad usage. */
const EXIT_VIOLATION = 1;

function positiveInt(name: string, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max)
      throw new InvalidArgumentError(`${name} must be an integer in 1..${max}`);
    return n;
  };
}

function intInRange(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
    return n;
  };
}

function durability(value: string): 'async' | 'replicated' {
  if (value !== 'async' && value !== 'replicated')
    throw new InvalidArgumentError('--durability must be async or replicated');
  return value;
}

function formatSummary(s: SimulationSummary): string {
  const faults = Object.entries(s.faults)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(', ');
  const lines = [
    `simulated ${s.simulatedSeconds.toFixed(1)} s of ${s.nodes} nodes × ${s.dbs} databases in ${s.wallMs} ms (seed ${s.seed})`,
    `faults injected: ${faults}`,
    `failovers: ${s.failovers}, highest epoch: ${s.maxEpoch}`,
    `longest leaderless stretch while the store was healthy: ${s.longestLeaderlessMsWhileHealthy} ms (bound ${s.livenessBoundMs} ms)`,
    `after healing: ${s.recoveredDatabases}/${s.dbs} databases with exactly one leader`,
    s.ok
      ? 'invariants: never two leaders (I1), epochs monotonic with one holder each (I2): held'
      : 'INVARIANTS VIOLATED:',
    ...s.violations.map((v) => `  ${v}`),
  ];
  return lines.join('\n');
}

export function buildProgram(): Command {
  const program = new Command()
    .name('hadb')
    .description('Highly available embedded SQLite with object storage as the source of truth')
    .version(packageVersion(), '-V, --version', 'print the version of hadb')
    .showHelpAfterError("Run 'hadb --help' for usage.")
    // Commander quotes a refused argument back: a URL in it may hold a password.
    .configureOutput({ outputError: (text, write) => write(redactUrlsIn(text)) })
    .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));

  registerOperationsCommands(program);
  registerServeCommand(program);

  program
    .command('simulate')
    .description(
      'run the leader-election core of N nodes × M databases on simulated time with random crashes, ' +
        'partitions, clock drift and a slow store; check the safety invariants at every instant',
    )
    .addOption(new Option('--nodes <n>', 'nodes').default(3).argParser(positiveInt('--nodes', 64)))
    .addOption(
      new Option('--dbs <n>', 'databases').default(10).argParser(positiveInt('--dbs', 10_000)),
    )
    .addOption(
      new Option('--seconds <n>', 'simulated seconds')
        .default(60)
        .argParser(positiveInt('--seconds', 86_400)),
    )
    .addOption(
      new Option('--seed <n>', 'seed of the fault schedule (replays a run exactly)').argParser(
        positiveInt('--seed', 2 ** 31),
      ),
    )
    .option('--json', 'print the summary as one JSON object')
    .action(
      async (options: {
        nodes: number;
        dbs: number;
        seconds: number;
        seed?: number;
        json?: boolean;
      }) => {
        const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31) + 1;
        const showProgress = !options.json && process.stderr.isTTY;
        const summary = await runSimulation({
          nodes: options.nodes,
          dbs: options.dbs,
          seconds: options.seconds,
          seed,
          onProgress: (done) => {
            if (showProgress)
              process.stderr.write(
                `\rsimulating… ${Math.round(done * 100)}%${done >= 1 ? '\n' : ''}`,
              );
          },
        });
        process.stdout.write(
          `${options.json ? JSON.stringify(summary) : formatSummary(summary)}\n`,
        );
        if (!summary.ok) process.exitCode = EXIT_VIOLATION;
      },
    );

  program
    .command('demo')
    .description(
      'start node processes (3 by default) on a temporary folder (fs storage, fs leases), ' +
        'write through all of them, SIGKILL the leader, restart it, and check that no ' +
        'acknowledged write was lost',
    )
    .addOption(
      new Option('--seconds <n>', 'how long the load runs')
        .default(12)
        .argParser(positiveInt('--seconds', 3600)),
    )
    .addOption(
      new Option('--kills <n>', 'how many times the leader is killed')
        .default(1)
        .argParser(intInRange('--kills', 0, 100)),
    )
    .addOption(
      new Option('--rate <n>', 'writes per second per node, 0 for as fast as they are acknowledged')
        .default(10)
        .argParser(intInRange('--rate', 0, 100_000)),
    )
    .addOption(
      new Option('--nodes <n>', 'node processes').default(3).argParser(intInRange('--nodes', 2, 9)),
    )
    .addOption(
      new Option('--durability <mode>', 'when a write is acknowledged: async or replicated')
        .default('replicated')
        .argParser(durability),
    )
    .option('--json', 'print the summary as one JSON object')
    .option('--keep', 'keep the temporary cluster folder')
    .action(
      async (options: {
        seconds: number;
        kills: number;
        rate: number;
        nodes: number;
        durability: 'async' | 'replicated';
        json?: boolean;
        keep?: boolean;
      }) => {
        process.exitCode = await runDemo({
          seconds: options.seconds,
          kills: options.kills,
          rate: options.rate,
          nodes: options.nodes,
          durability: options.durability,
          json: options.json === true,
          keep: options.keep === true,
        });
      },
    );

  program
    .command('worker', { hidden: true })
    .description(
      'one node under a write load, driven over stdio by `hadb demo` and the failover tests',
    )
    .requiredOption('--id <id>', 'node id')
    .requiredOption('--cluster <dir>', 'cluster folder shared by all nodes (storage and leases)')
    .requiredOption('--data <dir>', "this node's own folder")
    .option('--db <name...>', 'databases to open', ['kv'])
    .option('--storage <url>', 'storage URL (default: the cluster folder)')
    .option('--leases <url>', 'lease store URL (default: a lease file in the cluster folder)')
    .addOption(new Option('--ttl <ms>').default(1500).argParser(positiveInt('--ttl', 60_000)))
    .addOption(new Option('--renew <ms>').default(300).argParser(positiveInt('--renew', 60_000)))
    .addOption(new Option('--retry <ms>').default(100).argParser(positiveInt('--retry', 60_000)))
    .addOption(new Option('--poll <ms>').default(250).argParser(positiveInt('--poll', 60_000)))
    .addOption(new Option('--margin <ms>').default(200).argParser(positiveInt('--margin', 60_000)))
    .addOption(new Option('--durability <mode>').default('replicated').argParser(durability))
    .addOption(
      new Option('--concurrency <n>', 'writes in flight per database')
        .default(4)
        .argParser(positiveInt('--concurrency', 256)),
    )
    .addOption(
      new Option('--rate <n>', 'writes per second per database, 0 for unlimited')
        .default(0)
        .argParser(intInRange('--rate', 0, 100_000)),
    )
    .option('--no-load', 'wait for a start-load command before writing')
    .addOption(
      new Option('--forward-timeout <ms>', 'how long a write looks for a leader')
        .default(5000)
        .argParser(positiveInt('--forward-timeout', 600_000)),
    )
    .addOption(
      new Option('--status-interval <ms>', 'status line interval, 0 for none')
        .default(500)
        .argParser(intInRange('--status-interval', 0, 600_000)),
    )
    .option('--incarnation <tag>', 'part of every key, distinct for each run of the node')
    .addOption(transitionsOption())
    .addOption(inspectOption())
    .addOption(inspectUrlOption())
    .action(
      async (options: {
        id: string;
        cluster: string;
        data: string;
        db: string[];
        storage?: string;
        leases?: string;
        ttl: number;
        renew: number;
        retry: number;
        poll: number;
        margin: number;
        durability: 'async' | 'replicated';
        concurrency: number;
        rate: number;
        load: boolean;
        forwardTimeout: number;
        statusInterval: number;
        incarnation?: string;
        transitions?: string;
        inspect?: string[];
        inspectUrl: string;
      }) => {
        const secret = process.env.HADB_SECRET;
        if (!secret) {
          process.stderr.write('hadb worker: set the cluster secret in HADB_SECRET\n');
          process.exit(2);
        }
        const running = runWorker({
          id: options.id,
          clusterDir: options.cluster,
          dataDir: options.data,
          dbs: options.db,
          ...(options.storage ? { storageUrl: options.storage } : {}),
          ...(options.leases ? { leasesUrl: options.leases } : {}),
          secret,
          timing: {
            ttlMs: options.ttl,
            renewIntervalMs: options.renew,
            retryIntervalMs: options.retry,
            pollIntervalMs: options.poll,
            marginMs: options.margin,
          },
          durability: options.durability,
          concurrency: options.concurrency,
          rate: options.rate,
          load: options.load,
          forwardTimeoutMs: options.forwardTimeout,
          statusIntervalMs: options.statusInterval,
          incarnation: options.incarnation ?? process.pid.toString(36),
          observe: options,
        });
        await running.catch((error: unknown) => {
          reportFatal(options.id, error);
          process.exit(1);
        });
      },
    );

  // A usage error is one line and where to read more, not the whole help.
  for (const command of program.commands) {
    command.showHelpAfterError(`Run 'hadb ${command.name()} --help' for usage.`);
  }
  return program;
}

await buildProgram().parseAsync(process.argv);
