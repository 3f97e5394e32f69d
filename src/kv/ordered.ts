// An ordered collection of records keyed by binary strings: a list of sorted chunks.
// Lookup is a binary search over chunks then within a chunk: O(log n). Insert and remove splice one
// chunk (at most CHUNK_MAX records) and, on a split or merge, the chunk list (n / CHUNK_MAX entries),
// which stays cheap up to millions of keys. Range scans walk chunks in order.

export interface Keyed {
  readonly key: string;
}

/** Most records in one chunk; a chunk that grows past it is split in two. */
const CHUNK_MAX = 512;
/** A chunk smaller than this after a removal is merged into a neighbour when they fit together. */
const CHUNK_MERGE_BELOW = CHUNK_MAX / 4;
/** Chunk size used when bulk-loading sorted records (leaves room for inserts without splitting). */
const CHUNK_BULK = CHUNK_MAX / 2;

export class OrderedIndex<T extends Keyed> {
  private chunks: T[][] = [];
  private count = 0;
  /** Chunks a frozen view (freeze()) still holds: each is copied before its first change. */
  private shared: Set<T[]> | null = null;

  /**
   * The records as they are now, in key order, as chunks that later inserts and removals do not touch
   * (copy-on-write: a chunk is copied before its first change). Costs O(size / CHUNK_MAX), so a view of a
   * million keys is taken without stopping the event loop. One view at a time; thaw() releases it.
   */
  freeze(): readonly (readonly T[])[] {
    this.shared = new Set(this.chunks);
    return this.chunks.slice();
  }

  /** The frozen view is no longer used: changes stop copying chunks. */
  thaw(): void {
    this.shared = null;
  }

  /** Chunk `c`, copied first if a frozen view holds it. */
  private writable(c: number): T[] {
    const chunk = this.chunks[c]!;
    if (this.shared === null || !this.shared.delete(chunk)) return chunk;
    const copy = chunk.slice();
    this.chunks[c] = copy;
    return copy;
  }

  get size(): number {
    return this.count;
  }

  clear(): void {
    this.chunks = [];
    this.count = 0;
  }

  /** Replace the contents with `sorted`, which must be strictly ascending by key. */
  load(sorted: readonly T[]): void {
    this.chunks = [];
    for (let i = 0; i < sorted.length; i += CHUNK_BULK) {
      this.chunks.push(sorted.slice(i, i + CHUNK_BULK));
    }
    this.count = sorted.length;
  }

  /** Index of the chunk that holds `key` or would hold it: the last chunk whose first key <= key. */
  private chunkFor(key: string): number {
    const chunks = this.chunks;
    let lo = 0;
    let hi = chunks.length - 1;
    let found = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (chunks[mid]![0]!.key <= key) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /** First position in `chunk` whose key is >= key. */
  private static lowerBoundIn<U extends Keyed>(chunk: readonly U[], key: string): number {
    let lo = 0;
    let hi = chunk.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (chunk[mid]!.key < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Position (chunk, offset) of the first record with key >= `key`; chunk === chunks.length at the end. */
  private lowerBound(key: string): [number, number] {
    if (this.chunks.length === 0) return [0, 0];
    const c = this.chunkFor(key);
    const i = OrderedIndex.lowerBoundIn(this.chunks[c]!, key);
    if (i === this.chunks[c]!.length) return [c + 1, 0];
    return [c, i];
  }

  get(key: string): T | undefined {
    if (this.chunks.length === 0) return undefined;
    const chunk = this.chunks[this.chunkFor(key)]!;
    const i = OrderedIndex.lowerBoundIn(chunk, key);
    const record = chunk[i];
    return record !== undefined && record.key === key ? record : undefined;
  }

  /** Insert a record whose key is not present yet. Returns false (and changes nothing) if it is. */
  insert(record: T): boolean {
    if (this.chunks.length === 0) {
      this.chunks.push([record]);
      this.count = 1;
      return true;
    }
    const c = this.chunkFor(record.key);
    const i = OrderedIndex.lowerBoundIn(this.chunks[c]!, record.key);
    if (i < this.chunks[c]!.length && this.chunks[c]![i]!.key === record.key) return false;
    const chunk = this.writable(c);
    chunk.splice(i, 0, record);
    this.count++;
    if (chunk.length > CHUNK_MAX) {
      const upper = chunk.splice(chunk.length >> 1);
      this.chunks.splice(c + 1, 0, upper);
    }
    return true;
  }

  /** Remove the record with `key`. Returns the removed record, or undefined if absent. */
  remove(key: string): T | undefined {
    if (this.chunks.length === 0) return undefined;
    const c = this.chunkFor(key);
    const i = OrderedIndex.lowerBoundIn(this.chunks[c]!, key);
    if (i >= this.chunks[c]!.length || this.chunks[c]![i]!.key !== key) return undefined;
    const chunk = this.writable(c);
    const [removed] = chunk.splice(i, 1);
    this.count--;
    if (chunk.length === 0) {
      this.chunks.splice(c, 1);
    } else if (chunk.length < CHUNK_MERGE_BELOW) {
      this.mergeSmall(c);
    }
    return removed;
  }

  private mergeSmall(c: number): void {
    const chunk = this.chunks[c]!;
    const next = this.chunks[c + 1];
    if (next !== undefined && chunk.length + next.length <= CHUNK_MAX) {
      const into = this.writable(c);
      for (const record of next) into.push(record);
      this.chunks.splice(c + 1, 1);
      return;
    }
    const prev = this.chunks[c - 1];
    if (prev !== undefined && prev.length + chunk.length <= CHUNK_MAX) {
      const into = this.writable(c - 1);
      for (const record of chunk) into.push(record);
      this.chunks.splice(c, 1);
    }
  }

  /**
   * Visit records with start <= key < end (end null = unbounded) in ascending order until `visit`
   * returns false. The collection must not be modified during the walk.
   */
  scan(start: string, end: string | null, visit: (record: T) => boolean | void): void {
    const chunks = this.chunks;
    let [c, i] = this.lowerBound(start);
    for (; c < chunks.length; c++, i = 0) {
      const chunk = chunks[c]!;
      for (; i < chunk.length; i++) {
        const record = chunk[i]!;
        if (end !== null && record.key >= end) return;
        if (visit(record) === false) return;
      }
    }
  }

  /** Number of records with start <= key < end (end null = unbounded), without visiting them. */
  countRange(start: string, end: string | null): number {
    if (end !== null && end <= start) return 0;
    const [c1, i1] = this.lowerBound(start);
    let c2: number;
    let i2: number;
    if (end === null) {
      c2 = this.chunks.length;
      i2 = 0;
    } else {
      [c2, i2] = this.lowerBound(end);
    }
    if (c1 === c2) return i2 - i1;
    let total = this.chunks[c1]!.length - i1 + i2;
    for (let c = c1 + 1; c < c2; c++) total += this.chunks[c]!.length;
    return total;
  }

  /** Visit every record in ascending key order. */
  forEach(visit: (record: T) => void): void {
    for (const chunk of this.chunks) for (const record of chunk) visit(record);
  }

  /** Check the ordering invariants (for tests). Throws on violation. */
  checkInvariants(): void {
    let previous: string | null = null;
    let total = 0;
    for (const chunk of this.chunks) {
      if (chunk.length === 0) throw new Error("OrderedIndex: empty chunk");
      if (chunk.length > CHUNK_MAX) throw new Error("OrderedIndex: oversized chunk");
      for (const record of chunk) {
        if (previous !== null && !(previous < record.key)) throw new Error("OrderedIndex: keys out of order");
        previous = record.key;
        total++;
      }
    }
    if (total !== this.count) throw new Error("OrderedIndex: size mismatch");
  }
}
