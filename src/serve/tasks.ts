/**
 * Tasks: what a transfer's HTTP status cannot say. The 200 goes out before an import's body is read (XAPI's
 * contract), so the outcome is recorded here and read with `GET /task/<id>`. A client may name the task
 * (`task_id`, as XAPI clients do); otherwise one is made up and sent in the `task-id` header.
 */
import { randomUUID } from 'node:crypto';
import { RequestError } from '../util/errors.js';

/** A task as `GET /task/<id>` returns it. */
export interface Task {
  id: string;
  /** `import` or `export`. */
  kind: string;
  /** The disk's file name. */
  disk: string;
  status: 'pending' | 'success' | 'failure';
  /** 0 to 1. */
  progress: number;
  /** On success: what was done (bytes, the disk's uuid). */
  result: Record<string, unknown> | null;
  /** On failure: one line. */
  error: string | null;
  created: string;
  finished: string | null;
  /** Bytes to move, when known (for progress). */
  total: number | null;
}

/** Finished tasks kept for clients to read; older ones are forgotten first. */
const KEEP = 1000;

/** The server's tasks. */
export class Tasks {
  private readonly tasks = new Map<string, Task>();

  /** Starts a task, under the client's id when it gave one. A client id still pending is refused (409). */
  start(kind: string, disk: string, clientId: string | undefined): Task {
    if (clientId !== undefined && !/^[\x21-\x7e]{1,200}$/.test(clientId)) throw new RequestError(400, 'task_id must be 1 to 200 printable characters');
    const id = clientId ?? `task-${randomUUID()}`;
    if (this.tasks.get(id)?.status === 'pending') throw new RequestError(409, `task ${id} is still running`);
    this.tasks.delete(id);
    const task: Task = { id, kind, disk, status: 'pending', progress: 0, result: null, error: null, created: new Date().toISOString(), finished: null, total: null };
    this.tasks.set(id, task);
    this.trim();
    return task;
  }

  get(id: string): Task | undefined {
    return this.tasks.get(id);
  }

  /** Adds `bytes` done of the task's total. */
  advance(task: Task, done: number): void {
    if (task.total) task.progress = Math.min(0.99, done / task.total);
  }

  succeed(task: Task, result: Record<string, unknown>): void {
    Object.assign(task, { status: 'success', progress: 1, result, finished: new Date().toISOString() });
  }

  fail(task: Task, error: string): void {
    if (task.status !== 'pending') return;
    Object.assign(task, { status: 'failure', error, finished: new Date().toISOString() });
  }

  private trim(): void {
    if (this.tasks.size <= KEEP) return;
    for (const [id, t] of this.tasks) {
      if (this.tasks.size <= KEEP) break;
      if (t.status !== 'pending') this.tasks.delete(id);
    }
  }
}
