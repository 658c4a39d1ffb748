/**
 * What every bench report has besides its figures: the bars, each met or not (a noisy ratio never
 * fails the run), and the problems that make the run itself broken (a failed verify, a missing figure),
 * which make `weft bench` exit 1.
 */
export interface Bar {
  what: string;
  /** The bar as people read it, e.g. "p95 ≤ 100 ms" or "≥ 0.75 of raw". */
  bar: string;
  value: number;
  met: boolean;
  goal?: string;
}

export interface Outcome {
  ok: boolean;
  problems: string[];
  bars: Bar[];
}

export function outcome(bars: Bar[], problems: string[]): Outcome {
  return { ok: problems.length === 0, problems, bars };
}

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/** The names of figures that came out missing or not a number: a broken measurement, not a slow one. */
export function missing(figures: Record<string, number>): string[] {
  return Object.entries(figures)
    .filter(([, v]) => !Number.isFinite(v))
    .map(([k]) => `${k} was not measured`);
}
