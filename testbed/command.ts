// `widescan testbed up|down|status`: the CLI face of testbed/lab.ts.
import { Command } from 'commander';
import { checkLabName, DEFAULT_LAB_NAME, labDown, labStatus, labUp, type LabInfo } from './lab.js';

export { defaultPeerCommand } from './lab.js';

export interface TestbedCommandOptions {
  /** What `testbed up` starts in `<name>-peer` (e.g. `defaultPeerCommand`); nothing when absent. */
  peerCommand?: (info: LabInfo) => string[];
}

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

function print(cmd: Command, text: string): void {
  const out = cmd.configureOutput().writeOut ?? ((s: string) => process.stdout.write(s));
  out(`${text}\n`);
}

function labName(cmd: Command, name: string): string {
  try {
    return checkLabName(name);
  } catch (error) {
    return cmd.error(`error: ${(error as Error).message}`, { exitCode: EXIT_USAGE, code: 'widescan.invalidLabName' });
  }
}

async function orFail<T>(cmd: Command, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    return cmd.error(`error: ${(error as Error).message}`, { exitCode: EXIT_FAILURE, code: 'widescan.testbed' });
  }
}

function upSummary(info: LabInfo, peerStarted: boolean): string {
  const ns = info.namespaces;
  return [
    `lab ${info.name} is up`,
    `  namespaces    ${ns.scan} (scanner), ${ns.resp} (responders), ${ns.sink} (sink), ${ns.peer} (peer)`,
    `  scanner       ${info.scannerAddress}   run inside it: ip netns exec ${ns.scan} widescan ...`,
    `  peer          ${info.peerAddress}${peerStarted ? ` (widescan listener, log ${info.stateDir}/peer.log)` : ' (no listener started)'}`,
    `  live hosts    ${info.live.length}, plus aliased ${info.aliased.join(', ')}`,
    `  sink          ${info.sinkPrefixes.join(', ')} (exclude it; every echo request the sink gets is counted)`,
    `  ground truth  ${info.groundTruthFile}`,
    `  network key   ${info.networkKeyFile}`,
  ].join('\n');
}

export function testbedCommand(options: TestbedCommandOptions = {}): Command {
  const testbed = new Command('testbed').description(
    'a private IPv6 lab of network namespaces to scan (needs root; never reaches outside them)',
  );

  testbed
    .command('up')
    .description('build the lab: scanner, responders, sink and peer namespaces with a known population')
    .option('--name <name>', 'lab name: 1 to 6 of a-z and 0-9, starting with a letter', DEFAULT_LAB_NAME)
    .option('--state-dir <dir>', 'where the network key, ground truth and peer log go (default .testbed/<name>)')
    .option('--no-peer', 'do not start the second widescan instance in <name>-peer')
    .action(async (opts: { name: string; stateDir?: string; peer: boolean }, cmd: Command) => {
      const name = labName(cmd, opts.name);
      const peerCommand = opts.peer ? options.peerCommand : undefined;
      const info = await orFail(cmd, () => labUp({ name, stateDir: opts.stateDir, peerCommand }));
      print(cmd, upSummary(info, peerCommand !== undefined));
    });

  testbed
    .command('down')
    .description('stop the lab: its processes, namespaces, links and state files')
    .option('--name <name>', 'lab name', DEFAULT_LAB_NAME)
    .option('--state-dir <dir>', 'the state directory given to up (default .testbed/<name>)')
    .action(async (opts: { name: string; stateDir?: string }, cmd: Command) => {
      const name = labName(cmd, opts.name);
      const { removed } = await orFail(cmd, () => labDown(name, opts.stateDir));
      print(cmd, removed.length > 0 ? `lab ${name} is down; removed ${removed.join(', ')}` : `lab ${name} was not up; nothing to remove`);
    });

  testbed
    .command('status')
    .description('whether the lab is up, and the echo requests each namespace has received')
    .option('--name <name>', 'lab name', DEFAULT_LAB_NAME)
    .option('--json', 'print JSON')
    .action(async (opts: { name: string; json?: boolean }, cmd: Command) => {
      const name = labName(cmd, opts.name);
      const status = await orFail(cmd, () => labStatus(name));
      if (opts.json) {
        print(cmd, JSON.stringify(status));
        return;
      }
      const c = status.counters;
      print(
        cmd,
        [
          `lab ${name} is ${status.up ? 'up' : 'down'} (${status.namespaces.length}/4 namespaces${status.namespaces.length > 0 ? `: ${status.namespaces.join(', ')}` : ''})`,
          `  echo requests received: resp ${c.respEchoRequests}, sink ${c.sinkEchoRequests}, peer ${c.peerEchoRequests}`,
        ].join('\n'),
      );
    });

  return testbed;
}
