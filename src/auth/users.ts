/**
 * The built-in user directory from `auth.users`.
 *
 * @module
 */
import { isPasswordHash, verifyPassword } from "./password.ts";

/** A user of the built-in directory. */
export interface DirectoryUser {
  userId: string;
  username: string;
  password: string;
}

/** Looks users up by username and checks their passwords. */
export class UserDirectory {
  #byName = new Map<string, DirectoryUser>();
  #dummy =
    "pbkdf2-sha256$210000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

  constructor(users: DirectoryUser[]) {
    for (const user of users) this.#byName.set(user.username, user);
  }

  /** Usernames whose password is stored in plain text (warned about at start-up). */
  plainTextUsers(): string[] {
    return [...this.#byName.values()].filter((u) => !isPasswordHash(u.password)).map((u) =>
      u.username
    );
  }

  /** The userId for a correct username and password, or undefined. */
  async authenticate(username: string, password: string): Promise<string | undefined> {
    const user = this.#byName.get(username);
    // Hash even for an unknown user, so timing does not reveal which names exist.
    const ok = await verifyPassword(password, user?.password ?? this.#dummy);
    return user && ok ? user.userId : undefined;
  }
}
