/** A one-line progress display: a bar on a terminal, a line per 10% otherwise. */
export interface Progress {
  tick(n?: number): void;
  done(): void;
}

export function createProgress(out: NodeJS.WritableStream, label: string, total: number): Progress {
  const tty = (out as { isTTY?: boolean }).isTTY === true;
  let count = 0;
  let lastDecile = -1;
  const started = Date.now();
  const render = (): void => {
    const pct = total === 0 ? 100 : Math.floor((count / total) * 100);
    if (tty) {
      const width = 30;
      const filled = Math.round((pct / 100) * width);
      out.write(
        `\r  ${label.padEnd(16)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${count}/${total}`,
      );
    } else if (Math.floor(pct / 10) !== lastDecile) {
      lastDecile = Math.floor(pct / 10);
      out.write(`  ${label.padEnd(16)} ${count}/${total}\n`);
    }
  };
  return {
    tick(n = 1) {
      count += n;
      render();
    },
    done() {
      if (tty) render();
      out.write(
        `${tty ? '\n' : ''}  ${label.padEnd(16)} done: ${count}/${total} in ${Date.now() - started} ms\n`,
      );
    },
  };
}
