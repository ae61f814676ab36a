/**
 * Bearer tokens and session cookies: HS256 JWTs whose `sub` is the userId.
 * Tokens this server issues are signed with `auth.tokenSecret`; tokens from
 * another system are signed with `auth.jwt.secret`. Both are accepted
 * wherever a token is, and only HS256 is ever accepted.
 *
 * @module
 */
import { jwtVerify, SignJWT } from "jose";
import { SYSTEM } from "../protocol/codes.ts";

/** Options of {@link TokenService}. */
export interface TokenOptions {
  /** Secret for the tokens this server issues. */
  tokenSecret: string;
  /** Lifetime of issued tokens in seconds. */
  ttlSeconds: number;
  /** Secret, issuer and audience of tokens issued by another system. */
  jwt?: { secret: string; issuer?: string; audience?: string };
}

const ISSUER = "deno-im";
const encoder = new TextEncoder();

/** Issues and verifies tokens. */
export class TokenService {
  #own: Uint8Array;
  #ttl: number;
  #external?: { key: Uint8Array; issuer?: string; audience?: string };

  constructor(options: TokenOptions) {
    this.#own = encoder.encode(options.tokenSecret);
    this.#ttl = options.ttlSeconds;
    if (options.jwt) {
      this.#external = {
        key: encoder.encode(options.jwt.secret),
        issuer: options.jwt.issuer,
        audience: options.jwt.audience,
      };
    }
  }

  /** A signed token for `userId`. */
  issue(userId: string): Promise<string> {
    return new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(userId)
      .setIssuer(ISSUER)
      .setIssuedAt()
      .setExpirationTime(`${this.#ttl}s`)
      .sign(this.#own);
  }

  /** The userId of a valid token, or undefined. */
  async verify(token: string): Promise<string | undefined> {
    const own = await subjectOf(token, this.#own, { issuer: ISSUER });
    if (own !== undefined || !this.#external) return own;
    const { key, issuer, audience } = this.#external;
    return await subjectOf(token, key, { issuer, audience });
  }
}

async function subjectOf(
  token: string,
  key: Uint8Array,
  claims: { issuer?: string; audience?: string },
): Promise<string | undefined> {
  try {
    const { payload } = await jwtVerify(token, key, { algorithms: ["HS256"], ...claims });
    const sub = payload.sub;
    return typeof sub === "string" && sub !== "" && sub !== SYSTEM ? sub : undefined;
  } catch {
    return undefined;
  }
}
