/**
 * A device's migration driver: what a vfio-pci variant driver's mig_ops and log_ops do
 * (drivers/vfio/pci/mlx5/main.c is the shape followed: mlx5vf_pci_set_device_state walks
 * vfio_mig_get_next_state one arc at a time and stops at the first arc that fails). It lives in
 * the core so that every transport shares it: the device fd's VFIO_DEVICE_FEATURE (feature.ts,
 * in-process), and the vfio-user server, which maps MIG_DATA_READ/WRITE onto `read`/`write`.
 *
 * Arcs (vfio.h's comment on enum vfio_device_mig_state):
 *   RUNNING <-> RUNNING_P2P, PRE_COPY <-> PRE_COPY_P2P  nothing: our devices do no P2P DMA
 *   RUNNING(_P2P) -> STOP          quiesce: the model stops, in-flight work finishes, the gate shuts
 *   STOP -> RUNNING(_P2P)          the gate opens (held interrupts and DMA go on), the model starts
 *   RUNNING(_P2P) -> PRE_COPY(_P2P)  a saving session starts: the memory areas, shadowed
 *   PRE_COPY(_P2P) -> RUNNING(_P2P)  the session ends
 *   PRE_COPY(_P2P) -> STOP_COPY    quiesce, then the session's stop-copy part (changed pages, state)
 *   STOP -> STOP_COPY              a saving session, all of it at once
 *   STOP_COPY -> STOP              the session ends
 *   STOP -> RESUMING               a resuming session starts
 *   RESUMING -> STOP               the stream is checked and restored (snapshot.ts); refused:
 *                                  EINVAL, the device stays RESUMING as it was
 * A device reset (VFIO_DEVICE_RESET, the vfio-user client leaving) ends every session, stops
 * DMA logging and returns the device to RUNNING, from any state, ERROR included.
 */
import { Errno } from '../../abi/errno.js';
import {
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  VfioMigState,
} from '../../abi/vfio.js';
import { fail, VfioError } from '../../errors.js';
import type { DmaSpace } from '../dma.js';
import type { DirtyLog, LogRange } from './dirty.js';
import { isSaving, type MigState, migStateName, nextState } from './fsm.js';
import type { RunGate } from './gate.js';
import { LoadStream } from './load.js';
import { capture, hasModel, RestoreLost, restore, type SnapshotHost } from './snapshot.js';
import { END_BYTES, MEMORY_HEAD_BYTES, type MemoryArea, SaveStream, SECTION_HEAD_BYTES } from './stream.js';

const { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } = VfioMigState;

/** How long the arc into STOP waits for the device's work in flight before it gives up (ETIMEDOUT). */
export const QUIESCE_TIMEOUT_MS = 30_000;

const OP = 'VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE';

/** What the engine needs of the device besides snapshot.ts's part. */
export interface MigrationHost extends SnapshotHost {
  readonly gate: RunGate;
  readonly dma: Pick<DmaSpace, 'logger'>;
  /** The stream header naming this device (stream.ts encodeHeader). */
  header(): Uint8Array;
  /** Delivers an interrupt the gate held. */
  deliver(vector: number): void;
}

export class DeviceMigration {
  #state: MigState = RUNNING;
  #save: SaveStream | undefined;
  #load: LoadStream | undefined;
  /** The data transfer session's number; 0 when none is open. */
  #session = 0;
  #sessions = 0;
  /** Bumped by every reset: an arc that was waiting when one happened gives up. */
  #epoch = 0;
  #chain: Promise<unknown> = Promise.resolve();
  /** Bumped by every arc into STOP: a stop that timed out and finishes late undoes only its own. */
  #quiesces = 0;
  #changing = false;

  /**
   * `flags`: VFIO_MIGRATION_* (STOP_COPY required); `quiesceTimeoutMs`: how long the arc into
   * STOP waits (QUIESCE_TIMEOUT_MS). @throws VfioError(EINVAL) otherwise
   */
  constructor(
    private readonly host: MigrationHost,
    readonly flags: number,
    private readonly quiesceTimeoutMs = QUIESCE_TIMEOUT_MS,
  ) {
    const known = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
    if (!(flags & VFIO_MIGRATION_STOP_COPY) || flags & ~known)
      fail(Errno.EINVAL, 'migration', `flags 0x${flags.toString(16)}: STOP_COPY and no unknown bits`);
  }

  get state(): MigState {
    return this.#state;
  }

  /** The open data transfer session (its number), if any. */
  get session(): number | undefined {
    return this.#session || undefined;
  }

  /** A state change is under way (it waits for the device to quiesce). */
  get changing(): boolean {
    return this.#changing;
  }

  /**
   * VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE SET: to `target`, arc by arc. Resolves with the session
   * the last arc opened (the kernel's data_fd), if it opened one. Calls run one after another.
   * @throws VfioError: EINVAL for a state this device lacks or an arc vfio.h forbids, EINVAL for
   *   a refused stream, ETIMEDOUT when the device did not quiesce, EIO when a reset intervened;
   *   the state is then the last one reached.
   */
  setState(target: number): Promise<{ state: MigState; session: number | undefined }> {
    const run = this.#chain.then(() => this.#walk(target));
    this.#chain = run.catch(() => {});
    return run;
  }

  async #walk(target: number): Promise<{ state: MigState; session: number | undefined }> {
    let opened: number | undefined;
    this.#changing = true;
    try {
      while (this.#state !== target) {
        const next = nextState(this.flags, this.#state, target);
        opened = await this.#arc(this.#state, next);
        this.#state = next;
      }
    } finally {
      this.#changing = false;
    }
    return { state: this.#state, session: opened };
  }

  /** One arc; returns the session it opened. */
  async #arc(from: MigState, to: MigState): Promise<number | undefined> {
    switch (to) {
      case STOP:
        if (from === RUNNING || from === RUNNING_P2P) await this.#quiesce();
        else if (from === STOP_COPY) this.#endSession();
        else if (from === RESUMING) this.#restore();
        return undefined;
      case RUNNING:
      case RUNNING_P2P:
        if (from === STOP) this.#run();
        else if (from === PRE_COPY || from === PRE_COPY_P2P) this.#endSession();
        return undefined;
      case PRE_COPY:
      case PRE_COPY_P2P:
        if (from === RUNNING || from === RUNNING_P2P) {
          this.#save = new SaveStream(this.host.header(), this.host.memoryAreas(), true);
          return this.#open();
        }
        return undefined; // PRE_COPY <-> PRE_COPY_P2P
      case STOP_COPY:
        if (from === STOP) {
          this.#save = new SaveStream(this.host.header(), this.host.memoryAreas(), false);
          this.#save.finish(capture(this.host));
          return this.#open();
        }
        await this.#quiesce(); // from PRE_COPY(_P2P): the session goes on
        this.#save!.finish(capture(this.host));
        return undefined;
      case RESUMING:
        this.#load = new LoadStream(
          this.host.header(),
          this.host.memoryAreas(),
          hasModel(this.host.behaviour),
        );
        return this.#open();
    }
    return fail(Errno.EINVAL, OP, `no arc ${migStateName(from)} -> ${migStateName(to)}`);
  }

  #open(): number {
    this.#session = ++this.#sessions;
    return this.#session;
  }

  #endSession(): void {
    this.#save = undefined;
    this.#load = undefined;
    this.#session = 0;
  }

  /** Into STOP: the model stops, work in flight finishes, then the gate shuts. */
  async #quiesce(): Promise<void> {
    const b = this.host.behaviour;
    const epoch = this.#epoch;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new VfioError(Errno.ETIMEDOUT, OP, `the device did not quiesce in ${this.quiesceTimeoutMs} ms`),
          ),
        this.quiesceTimeoutMs,
      );
    });
    const quiesce = ++this.#quiesces;
    const stopped = (async () => {
      await b.migration?.stop?.();
      await b.settled?.();
    })();
    try {
      await Promise.race([stopped, timeout]);
    } catch (e) {
      b.migration?.start?.();
      // A stop that timed out may still finish (nvme halts once its commands are done): undo it
      // then too, unless a later arc into STOP has taken the model over since.
      stopped.then(
        () => {
          if (quiesce === this.#quiesces) b.migration?.start?.();
        },
        () => {},
      );
      throw e;
    } finally {
      clearTimeout(timer);
    }
    // A reset while we waited took the device back to RUNNING: leave it running. The model's
    // stop finished after the reset (nvme halts once its commands are done), so undo it.
    if (epoch !== this.#epoch) {
      b.migration?.start?.();
      fail(Errno.EIO, OP, 'the device was reset during the state change');
    }
    this.host.gate.shut();
  }

  /** Out of STOP: held interrupts and DMA go on, then the model picks up its work. */
  #run(): void {
    this.host.gate.start((v) => this.host.deliver(v));
    this.host.behaviour.migration?.start?.();
  }

  /** RESUMING -> STOP: the stream, whole and checked, into the device. */
  #restore(): void {
    const loaded = this.#load!.finish();
    try {
      restore(this.host, loaded);
    } catch (e) {
      if (e instanceof RestoreLost) {
        this.#endSession();
        this.#state = ERROR;
      }
      throw e;
    }
    this.#endSession();
  }

  // -------------------------------------------------------------------------------------------
  // The data transfer session (the kernel's data_fd; vfio-user MIG_DATA_READ / MIG_DATA_WRITE)
  // -------------------------------------------------------------------------------------------
  #current(op: string, session: number | undefined): void {
    if (this.#changing) fail(Errno.EBUSY, op, 'a state change is under way');
    if (session !== undefined && session !== this.#session) fail(Errno.ENODEV, op, 'that session has ended');
  }

  /**
   * Up to `max` bytes of the saving stream (PRE_COPY, PRE_COPY_P2P, STOP_COPY). Fewer when no
   * more is there now: in PRE_COPY that is vfio.h's temporary end of stream (the kernel's read
   * says ENOMSG, vfio-user's MIG_DATA_READ a short reply); in STOP_COPY, the end.
   * @throws VfioError(EINVAL) outside the saving states (libvfio-user handle_mig_data_read)
   */
  read(max: number, session?: number): Uint8Array {
    const op = 'migration data read';
    this.#current(op, session);
    const s = this.#save;
    if (!s || !isSaving(this.#state)) return fail(Errno.EINVAL, op, `device is ${migStateName(this.#state)}`);
    if (s.pending === 0 && this.#state !== STOP_COPY) s.refresh();
    return s.read(max);
  }

  /** Bytes of the stream for the RESUMING device. @throws VfioError(EINVAL) otherwise or refused */
  write(data: Uint8Array, session?: number): void {
    const op = 'migration data write';
    this.#current(op, session);
    if (!this.#load || this.#state !== RESUMING)
      fail(Errno.EINVAL, op, `device is ${migStateName(this.#state)}`);
    this.#load.write(data);
  }

  /**
   * VFIO_MIG_GET_PRECOPY_INFO: the initial data still to read, and the bytes changed since they
   * were read. @throws VfioError(EINVAL) outside PRE_COPY / PRE_COPY_P2P ("valid only in
   * PRE_COPY states and kernel driver should return -EINVAL from any other migration state")
   */
  precopyInfo(session?: number): { initialBytes: bigint; dirtyBytes: bigint } {
    const op = 'VFIO_MIG_GET_PRECOPY_INFO';
    this.#current(op, session);
    if (!this.#save || (this.#state !== PRE_COPY && this.#state !== PRE_COPY_P2P))
      fail(Errno.EINVAL, op, `device is ${migStateName(this.#state)}`);
    return { initialBytes: BigInt(this.#save.pending), dirtyBytes: BigInt(this.#save.dirtyBytes()) };
  }

  /** VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: what STOP_COPY would still produce, estimated. */
  dataSize(): bigint {
    if (this.#save && this.#state === STOP_COPY) return BigInt(this.#save.pending);
    // Each area whole in a MEMORY section.
    const areas = this.host.memoryAreas().reduce((n, a) => n + MEMORY_HEAD_BYTES + a.bytes.length, 0);
    const sections = capture(this.host).reduce((n, [, b]) => n + SECTION_HEAD_BYTES + b.length, 0);
    const pending = this.#save ? this.#save.pending + this.#save.dirtyBytes() : areas;
    return BigInt(this.host.header().length + pending + sections + END_BYTES);
  }

  // -------------------------------------------------------------------------------------------
  // DMA logging (dirty.ts; feature.ts checks the requests)
  // -------------------------------------------------------------------------------------------
  get logging(): DirtyLog | undefined {
    return this.host.dma.logger;
  }

  startLogging(log: DirtyLog): void {
    // vfio.h: "A single call to start device DMA logging can be issued and a matching stop should
    // follow at the end. Another start is not allowed in the meantime."
    if (this.host.dma.logger) fail(Errno.EINVAL, 'VFIO_DEVICE_FEATURE_DMA_LOGGING_START', 'logging already');
    this.host.dma.logger = log;
  }

  stopLogging(): void {
    this.host.dma.logger = undefined;
  }

  /** A device reset: RUNNING, no session, no logging, nothing held (see the file's header). */
  reset(): void {
    this.#epoch++;
    this.#endSession();
    this.#state = RUNNING;
    this.host.gate.reset();
    this.stopLogging();
  }
}

export type { LogRange, MemoryArea };
