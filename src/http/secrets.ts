/** Shared secrets short enough to guess are refused where they are configured. */
export const MIN_SECRET_LENGTH = 16;

/** Why `value` cannot be the secret `setting` names, or null when it can. */
export function secretLengthProblem(setting: string, value: string): string | null {
  if (value.length >= MIN_SECRET_LENGTH) return null;
  return `${setting} must be at least ${MIN_SECRET_LENGTH} characters (it has ${value.length})`;
}
