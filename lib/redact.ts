/**
 * Removes secrets from text before it leaves the process (logs, HTTP errors, dead-letter bodies).
 * Known secrets are registered once at start-up; anything shaped like a Stripe key or a webhook
 * secret is masked even when it was never registered.
 */
const SECRET_SHAPES =
  /\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9+/=]+|\bek_(?:live|test)_[A-Za-z0-9]+/g;
const registered = new Set<string>();

export function registerSecret(secret: string | undefined): void {
  // Very short strings would mask ordinary words; they are not secrets worth the name anyway.
  if (secret && secret.length >= 8) registered.add(secret);
}

export function redact(text: string): string {
  let out = text.replace(SECRET_SHAPES, "[REDACTED]");
  for (const s of registered) if (out.includes(s)) out = out.split(s).join("[REDACTED]");
  return out;
}
