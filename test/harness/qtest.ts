/**
 * Drives QEMU with `-accel qtest -qtest stdio`: no guest code runs, and a line protocol lets a
 * test do port and memory I/O on the machine (QEMU's system/qtest.c: `outl ADDR VAL` -> `OK`,
 * `inl ADDR` -> `OK VAL`, `readl ADDR` -> `OK VAL`, `writel ADDR VAL` -> `OK`, errors `FAIL ...`,
 * and unsolicited `IRQ raise|lower N` lines once `irq_intercept_in` is used). Config space is
 * reached through the PCI configuration mechanism #1 ports 0xcf8/0xcfc (PCI Local Bus spec 3.0,
 * 3.2.2.3.2). The vfio-user tests point QEMU 11's vfio-user-pci at a server with this.
 */
import type { ChildProcess } from 'node:child_process';
import type { Provisioned } from './provisioned.js';
import { type Command, spawnQemu, trixieQemuCommand } from './qemu.js';

export const DEFAULT_QTEST_TIMEOUT_MS = 10_000;
/** Unsolicited IRQ lines kept (oldest dropped first). */
export const MAX_QTEST_IRQ_EVENTS = 4096;
const MAX_STDERR_CHARS = 1 << 20;

export interface QtestOptions {
  /** Machine type; default q35. */
  machine?: string;
  /** More QEMU arguments (devices, objects). For the chroot QEMU every path is a chroot path. */
  args?: readonly string[];
  /** 'trixie' (default): QEMU 11 in the chroot, needs root. 'host': bookworm's QEMU 7.2. */
  qemu?: 'host' | 'trixie';
  /** Per-command timeout; when it fires QEMU is killed and the session fails. */
  timeoutMs?: number;
}

interface Pending {
  line: string;
  resolve: (answer: string) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class QtestError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'QtestError';
  }
}

export class QtestSession {
  readonly argv: string[];
  readonly irqEvents: string[] = [];
  private readonly child: ChildProcess;
  private readonly timeoutMs: number;
  private readonly queue: Pending[] = [];
  private buffered = '';
  private stderrText = '';
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitPromise: Promise<void>;

  constructor(cmd: Command, timeoutMs: number) {
    this.argv = [cmd.file, ...cmd.args];
    this.timeoutMs = timeoutMs;
    this.child = spawnQemu(cmd);
    this.child.stdout?.setEncoding('utf8');
    this.child.stdout?.on('data', (chunk: string) => this.onData(chunk));
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (chunk: string) => {
      if (this.stderrText.length < MAX_STDERR_CHARS) this.stderrText += chunk;
    });
    this.child.stdin?.on('error', () => {}); // EPIPE when QEMU dies first: reported via 'close'
    this.exitPromise = new Promise((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.exited !== undefined) return;
        this.exited = { code, signal };
        this.failAll(`QEMU exited (code ${code}, signal ${signal})`);
        resolve();
      };
      this.child.once('close', done);
      this.child.once('error', (err) => {
        this.stderrText += `\nspawn error: ${err.message}`;
        done(null, null);
      });
    });
  }

  get stderr(): string {
    return this.stderrText;
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    for (;;) {
      const nl = this.buffered.indexOf('\n');
      if (nl < 0) return;
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (line === '') continue;
      if (line.startsWith('IRQ ')) {
        this.irqEvents.push(line);
        if (this.irqEvents.length > MAX_QTEST_IRQ_EVENTS) this.irqEvents.shift();
        continue;
      }
      const p = this.queue.shift();
      if (p === undefined) continue; // nothing asked: ignore
      clearTimeout(p.timer);
      if (line === 'OK' || line.startsWith('OK ')) p.resolve(line.slice(2).trim());
      else p.reject(new QtestError(`qtest: ${JSON.stringify(p.line)} -> ${line}`, this.stderrText));
    }
  }

  private failAll(why: string): void {
    for (const p of this.queue.splice(0)) {
      clearTimeout(p.timer);
      p.reject(
        new QtestError(`qtest: ${JSON.stringify(p.line)}: ${why}\n${this.stderrText}`, this.stderrText),
      );
    }
  }

  /** Sends one protocol line; resolves with what follows `OK` (may be empty). */
  command(line: string): Promise<string> {
    if (line.includes('\n')) return Promise.reject(new QtestError('qtest: one line per command', ''));
    if (this.exited !== undefined) {
      return Promise.reject(
        new QtestError(`qtest: QEMU already exited\n${this.stderrText}`, this.stderrText),
      );
    }
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        this.failAll(`no answer within ${this.timeoutMs} ms`);
      }, this.timeoutMs);
      this.queue.push({ line, resolve, reject, timer });
      this.child.stdin?.write(`${line}\n`);
    });
  }

  private async value(line: string): Promise<bigint> {
    const ans = await this.command(line);
    if (!/^0x[0-9a-fA-F]+$/.test(ans))
      throw new QtestError(`qtest: ${line}: unexpected answer ${ans}`, this.stderrText);
    return BigInt(ans);
  }

  outb(port: number, value: number): Promise<string> {
    return this.command(`outb 0x${port.toString(16)} 0x${value.toString(16)}`);
  }
  outw(port: number, value: number): Promise<string> {
    return this.command(`outw 0x${port.toString(16)} 0x${value.toString(16)}`);
  }
  outl(port: number, value: number): Promise<string> {
    return this.command(`outl 0x${port.toString(16)} 0x${(value >>> 0).toString(16)}`);
  }
  async inb(port: number): Promise<number> {
    return Number(await this.value(`inb 0x${port.toString(16)}`));
  }
  async inw(port: number): Promise<number> {
    return Number(await this.value(`inw 0x${port.toString(16)}`));
  }
  async inl(port: number): Promise<number> {
    return Number(await this.value(`inl 0x${port.toString(16)}`));
  }
  async readb(addr: bigint | number): Promise<number> {
    return Number(await this.value(`readb 0x${addr.toString(16)}`));
  }
  async readw(addr: bigint | number): Promise<number> {
    return Number(await this.value(`readw 0x${addr.toString(16)}`));
  }
  async readl(addr: bigint | number): Promise<number> {
    return Number(await this.value(`readl 0x${addr.toString(16)}`));
  }
  readq(addr: bigint | number): Promise<bigint> {
    return this.value(`readq 0x${addr.toString(16)}`);
  }
  writeb(addr: bigint | number, value: number): Promise<string> {
    return this.command(`writeb 0x${addr.toString(16)} 0x${value.toString(16)}`);
  }
  writew(addr: bigint | number, value: number): Promise<string> {
    return this.command(`writew 0x${addr.toString(16)} 0x${value.toString(16)}`);
  }
  writel(addr: bigint | number, value: number): Promise<string> {
    return this.command(`writel 0x${addr.toString(16)} 0x${(value >>> 0).toString(16)}`);
  }
  writeq(addr: bigint | number, value: bigint): Promise<string> {
    return this.command(`writeq 0x${addr.toString(16)} 0x${BigInt.asUintN(64, value).toString(16)}`);
  }

  /** `read ADDR SIZE` (system/qtest.c): `size` bytes of guest memory, answered as 0x<hex>. */
  async read(addr: bigint | number, size: number): Promise<Uint8Array> {
    const ans = await this.command(`read 0x${addr.toString(16)} 0x${size.toString(16)}`);
    if (!/^0x([0-9a-fA-F]{2})*$/.test(ans) || ans.length !== 2 + 2 * size)
      throw new QtestError(`qtest: read: unexpected answer ${ans.slice(0, 80)}`, this.stderrText);
    return Uint8Array.from(Buffer.from(ans.slice(2), 'hex'));
  }
  /** `write ADDR SIZE 0x<hex>` (system/qtest.c): bytes into guest memory. */
  write(addr: bigint | number, data: Uint8Array): Promise<string> {
    const hex = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');
    return this.command(`write 0x${addr.toString(16)} 0x${data.length.toString(16)} 0x${hex}`);
  }

  /** Configuration mechanism #1 address for 0xcf8 (enable bit, bus, device, function, dword offset). */
  static configAddress(bus: number, dev: number, fn: number, offset: number): number {
    return (0x8000_0000 | (bus << 16) | (dev << 11) | (fn << 8) | (offset & 0xfc)) >>> 0;
  }

  async pciConfigRead32(bus: number, dev: number, fn: number, offset: number): Promise<number> {
    await this.outl(0xcf8, QtestSession.configAddress(bus, dev, fn, offset));
    return this.inl(0xcfc);
  }

  async pciConfigWrite32(bus: number, dev: number, fn: number, offset: number, value: number): Promise<void> {
    await this.outl(0xcf8, QtestSession.configAddress(bus, dev, fn, offset));
    await this.outl(0xcfc, value);
  }

  /** Kills QEMU (qtest QEMU does not exit on EOF) and waits for it. */
  async close(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.exited === undefined) {
      this.child.stdin?.end();
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 2_000);
      await this.exitPromise;
      clearTimeout(t);
    }
    return this.exited ?? { code: null, signal: null };
  }
}

/** Starts a qtest QEMU; the first command waits for it to be up. */
export function startQtest(p: Provisioned, opts: QtestOptions = {}): QtestSession {
  const args = [
    '-machine',
    opts.machine ?? 'q35',
    '-accel',
    'qtest',
    '-qtest',
    'stdio',
    '-display',
    'none',
    '-nodefaults',
    '-monitor',
    'none',
    '-serial',
    'none',
    ...(opts.args ?? []),
  ];
  const cmd: Command = opts.qemu === 'host' ? { file: p.qemuHost, args } : trixieQemuCommand(p, args);
  return new QtestSession(cmd, opts.timeoutMs ?? DEFAULT_QTEST_TIMEOUT_MS);
}

/** Runs `fn` with a qtest session and always closes it. */
export async function withQtest<T>(
  p: Provisioned,
  opts: QtestOptions,
  fn: (q: QtestSession) => Promise<T>,
): Promise<T> {
  const q = startQtest(p, opts);
  try {
    return await fn(q);
  } finally {
    await q.close();
  }
}
