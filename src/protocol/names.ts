/**
 * The rule for a `clientName` (PROTOCOL.md section 3), used by the login
 * route, the kick route and plugin names alike.
 *
 * @module
 */

/** 1 to 64 characters of `A-Z a-z 0-9 _ . -`. */
export const CLIENT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** {@link CLIENT_NAME} in words, for error messages. */
export const CLIENT_NAME_RULE = "must be 1 to 64 characters of A-Z a-z 0-9 _ . -";
