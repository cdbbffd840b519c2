/** A URL without its user name and password, for messages and summaries (apart from io/http.ts, which loads node:tls). */
export function redactUrl(url: string | URL): string {
  const u = new URL(String(url));
  u.username = '';
  u.password = '';
  return u.toString();
}
