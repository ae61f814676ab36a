/**
 * The built-in user directory from `auth.users`.
 *
 * @module
 */
import {
  isPasswordHash,
  iterationsOf,
  plainTextEqual,
  spendHashWork,
  verifyPassword,
} from "./password.ts";

/** A user of the built-in directory. */
export interface DirectoryUser {
  userId: string;
  username: string;
  password: string;
}

/** Looks users up by username and checks their passwords. */
export class UserDirectory {
  #byName = new Map<string, DirectoryUser>();
  /** The most PBKDF2 iterations of a hashed password: the work every check costs. */
  #work = 0;
  /** What an unknown user's password is compared with (never equal: it is random). */
  #dummy = crypto.randomUUID();

  #userIds = new Set<string>();

  constructor(users: DirectoryUser[]) {
    for (const user of users) {
      this.#byName.set(user.username, user);
      this.#userIds.add(user.userId);
      this.#work = Math.max(this.#work, iterationsOf(user.password));
    }
  }

  /** Usernames whose password is stored in plain text (warned about at start-up). */
  plainTextUsers(): string[] {
    return [...this.#byName.values()].filter((u) => !isPasswordHash(u.password)).map((u) =>
      u.username
    );
  }

  /** Whether `userId` belongs to a user of the directory. */
  hasUserId(userId: string): boolean {
    return this.#userIds.has(userId);
  }

  /** Number of users. */
  get size(): number {
    return this.#byName.size;
  }

  /**
   * The userId for a correct username and password, or undefined. `hashing`
   * runs the password check (the login guard's bounded queue).
   */
  async authenticate(
    username: string,
    password: string,
    hashing: <T>(hash: () => Promise<T>) => Promise<T> = (hash) => hash(),
  ): Promise<string | undefined> {
    const user = this.#byName.get(username);
    // Without a hashed password there is no PBKDF2 to bound: no queue.
    const check = () => this.#check(password, user?.password);
    const ok = this.#work > 0 ? await hashing(check) : await check();
    return user && ok ? user.userId : undefined;
  }

  /**
   * Equal work whatever the user: a hashed password costs its PBKDF2 run; an
   * unknown user or a plain-text password spends the same run for nothing, then
   * compares digests in constant time. So timing tells neither whether a name
   * exists nor how its password is stored.
   */
  async #check(password: string, stored: string | undefined): Promise<boolean> {
    if (stored !== undefined && isPasswordHash(stored)) {
      // A hash of fewer iterations than the most is padded with the difference.
      await spendHashWork(password, this.#work - iterationsOf(stored));
      return await verifyPassword(password, stored);
    }
    await spendHashWork(password, this.#work);
    return await plainTextEqual(password, stored ?? this.#dummy);
  }
}
