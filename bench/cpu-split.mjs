// Where a command's CPU goes, per process: runs the command, samples /proc/<pid>/stat of every process
// every 250 ms (user and system time since the process started, or since the command started for processes
// older than it), and prints each process's total, heaviest first, with the machine's softirq time (the
// kernel's packet work that no process is charged for). Linux only.
//   node bench/cpu-split.mjs COMMAND [ARGS…]   (e.g. under `ip netns exec`: see bench/README.md)
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const HZ = 100; // USER_HZ, fixed at 100 on Linux for /proc
const read = (file) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined; // the process ended between listing and reading
  }
};
function processes() {
  const out = new Map();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = read(`/proc/${pid}/stat`);
    const cmdline = read(`/proc/${pid}/cmdline`);
    if (stat === undefined || cmdline === undefined) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(pid, { command: cmdline.replaceAll('\0', ' ').trim().slice(0, 100), user: Number(fields[11]), system: Number(fields[12]) });
  }
  return out;
}
const machine = () => readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);

if (process.argv.length < 3) {
  console.error('usage: node bench/cpu-split.mjs COMMAND [ARGS…]');
  process.exit(2);
}
const before = machine();
const started = Date.now();
const base = processes();
const last = new Map();
const sample = () => {
  for (const [pid, p] of processes()) {
    const b = base.get(pid);
    last.set(pid, b && b.command === p.command ? { ...p, user: p.user - b.user, system: p.system - b.system } : p);
  }
};
const timer = setInterval(sample, 250);
const child = spawn(process.argv[2], process.argv.slice(3), { stdio: ['ignore', 'pipe', 'ignore'] });
let output = '';
child.stdout.on('data', (d) => (output = (output + d).slice(-4096)));
child.on('exit', () => {
  clearInterval(timer);
  const after = machine();
  console.log(output.trim().split('\n').at(-1));
  const byCommand = new Map();
  for (const p of last.values()) {
    if (p.user + p.system === 0 || p.command.includes('bench/cpu-split.mjs')) continue;
    // One line per component: the path from dist/ on, else the command itself.
    const name = p.command.includes('dist/') ? p.command.slice(p.command.indexOf('dist/')) : p.command;
    const t = byCommand.get(name) ?? { user: 0, system: 0 };
    t.user += p.user;
    t.system += p.system;
    byCommand.set(name, t);
  }
  for (const [name, t] of [...byCommand].sort((a, b) => b[1].user + b[1].system - a[1].user - a[1].system)) {
    console.log(`${((t.user + t.system) / HZ).toFixed(2).padStart(7)} s CPU (user ${(t.user / HZ).toFixed(2)}, system ${(t.system / HZ).toFixed(2)})  ${name.slice(0, 70)}`);
  }
  const d = after.map((v, i) => (v - before[i]) / HZ);
  console.log(`wall ${((Date.now() - started) / 1000).toFixed(1)} s; whole machine: user ${d[0].toFixed(2)} s, system ${d[2].toFixed(2)} s, softirq ${d[6].toFixed(2)} s, idle ${d[3].toFixed(2)} s`);
});
