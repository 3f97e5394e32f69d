import { describe, expect, test } from "bun:test";
import { SimDisk } from "../../src/storage";
import { mulberry32 } from "../rng";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array | null) => (data === null ? null : new TextDecoder().decode(data));

function diskWithFile(manualSyncs = false): { disk: SimDisk; fd: number } {
  const disk = new SimDisk({ rng: mulberry32(1), manualSyncs });
  disk.mkdir("/d");
  const fd = disk.open("/d/f", "wx");
  disk.fsyncDir("/d");
  return { disk, fd };
}

function errorCodeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

describe("SimDisk", () => {
  test("kill -9 keeps the page cache; a power loss keeps only what was fdatasynced", () => {
    const { disk, fd } = diskWithFile();
    disk.write(fd, bytes("synced "), 0);
    disk.fdatasync(fd);
    disk.write(fd, bytes("unsynced"), 7);
    disk.crash({ keepPageCache: true });
    expect(errorCodeOf(() => disk.size(fd))).toBe("EBADF");
    expect(text(disk.fileBytes("/d/f"))).toBe("synced unsynced");
    disk.crash({ keepPageCache: false, fate: () => ({ kind: "lost" }) });
    expect(text(disk.fileBytes("/d/f"))).toBe("synced ");
  });

  test("a power loss tears an unsynced write: a prefix, or its end after zeros", () => {
    for (const [fate, expected] of [
      [{ kind: "prefix", bytes: 3 }, "abcdef"],
      [{ kind: "suffix", from: 4 }, "abc\0\0\0\0hijk"],
      [{ kind: "kept" }, "abcdefghijk"],
    ] as const) {
      const { disk, fd } = diskWithFile();
      disk.write(fd, bytes("abc"), 0);
      disk.fdatasync(fd);
      disk.write(fd, bytes("defghijk"), 3);
      disk.crash({ keepPageCache: false, fate: () => fate });
      expect(text(disk.fileBytes("/d/f"))).toBe(expected);
    }
  });

  test("a create or rename is lost on power loss until its directory is fsynced", () => {
    const disk = new SimDisk({ rng: mulberry32(2) });
    disk.mkdir("/d");
    const fd = disk.open("/d/tmp", "wx");
    disk.write(fd, bytes("x"), 0);
    disk.fdatasync(fd);
    disk.close(fd);
    disk.rename("/d/tmp", "/d/final");
    expect(disk.readdir("/d")).toEqual(["final"]);
    disk.crash({ keepPageCache: false });
    expect(disk.readdir("/d")).toEqual([]);

    const again = disk.open("/d/tmp", "wx");
    disk.write(again, bytes("y"), 0);
    disk.fdatasync(again);
    disk.rename("/d/tmp", "/d/final");
    disk.fsyncDir("/d");
    disk.crash({ keepPageCache: false });
    expect(text(disk.fileBytes("/d/final"))).toBe("y");
  });

  test("a failed fsync throws EIO and its writes never become durable, even after a later good fsync", () => {
    const { disk, fd } = diskWithFile();
    disk.write(fd, bytes("lost"), 0);
    disk.failNextFsync();
    expect(errorCodeOf(() => disk.fdatasync(fd))).toBe("EIO");
    disk.fdatasync(fd); // "succeeds": nothing is pending any more
    expect(text(disk.fileBytes("/d/f"))).toBe("lost"); // reads still see it
    disk.crash({ keepPageCache: false, fate: () => ({ kind: "kept" }) });
    expect(text(disk.fileBytes("/d/f"))).toBe("");
  });

  test("writes past the space limit fail with ENOSPC and change nothing", () => {
    const { disk, fd } = diskWithFile();
    disk.setSpaceLimit(10);
    disk.write(fd, bytes("0123456789"), 0);
    expect(errorCodeOf(() => disk.write(fd, bytes("a"), 10))).toBe("ENOSPC");
    disk.write(fd, bytes("ab"), 0); // overwriting needs no space
    expect(text(disk.fileBytes("/d/f"))).toBe("ab23456789");
  });

  test("with manual syncs, an async fdatasync makes data durable only when the simulation completes it", async () => {
    const { disk, fd } = diskWithFile(true);
    disk.write(fd, bytes("one"), 0);
    let done = false;
    const sync = disk.fdatasyncAsync(fd).then(() => (done = true));
    disk.write(fd, bytes("two"), 3); // issued after the sync began: not covered by it
    await Promise.resolve();
    expect(done).toBe(false);
    expect(disk.queuedSyncCount()).toBe(1);
    expect(text(disk.durableBytes("/d/f"))).toBe("");
    expect(disk.completeSyncs()).toBe(1);
    await sync;
    expect(done).toBe(true);
    expect(text(disk.durableBytes("/d/f"))).toBe("one");
  });
});
