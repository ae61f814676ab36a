/**
 * The web console in headless Chromium against a real server: two pages log
 * in as two users and exchange messages, statuses and receipts. Also the
 * console's static handler, which needs no browser.
 *
 * The browser test is skipped (with a message) only when /usr/bin/chromium is
 * missing. It writes docs/console.png when that file is missing or when
 * UPDATE_SCREENSHOT=1 is set, so ordinary runs leave the work tree clean.
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { chromium, type Page } from "playwright-core";
import { consoleHandler } from "../src/console/serve.ts";
import { startServer, TEST_API_KEY } from "./_helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT = new URL("../docs/console.png", import.meta.url);

function exists(path: string | URL): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const hasChromium = exists(CHROMIUM);
if (!hasChromium) {
  console.warn(
    `%cbrowser_test: skipping the console test: ${CHROMIUM} is missing (apt-get install chromium)`,
    "color: yellow",
  );
}

Deno.test("consoleHandler() serves the page and the client, and passes on other paths", async (t) => {
  const handle = consoleHandler();
  const get = async (path: string, init?: RequestInit) =>
    await handle(new Request(`http://localhost${path}`, init));

  await t.step("the page, its module, its styles and the client", async () => {
    for (
      const [path, type, text] of [
        ["/", "text/html", '<script type="module" src="/console.js">'],
        ["/index.html", "text/html", "<title>IM console</title>"],
        ["/console.js", "text/javascript", 'from "/client.js"'],
        ["/console.css", "text/css", ":root"],
        ["/client.js", "text/javascript", "// @ts-self-types"],
        ["/client.d.ts", "application/typescript", "export declare class ImClient"],
      ]
    ) {
      const res = await get(path);
      ok(res, `${path} is served`);
      deepStrictEqual(res.status, 200);
      ok(res.headers.get("content-type")?.startsWith(type), `${path} is ${type}`);
      ok((await res.text()).includes(text), `${path} holds ${text}`);
    }
  });

  await t.step("the page forbids other origins' scripts and framing", async () => {
    const res = (await get("/"))!;
    await res.body?.cancel();
    ok(res.headers.get("content-security-policy")?.includes("script-src 'self'"));
    deepStrictEqual(res.headers.get("x-frame-options"), "DENY");
  });

  await t.step("the client module names its types and may be imported from anywhere", async () => {
    const res = (await get("/client.js"))!;
    await res.body?.cancel();
    deepStrictEqual(res.headers.get("x-typescript-types"), "/client.d.ts");
    deepStrictEqual(res.headers.get("access-control-allow-origin"), "*");
  });

  await t.step("HEAD has no body, a matching ETag gives 304", async () => {
    const head = (await get("/console.css", { method: "HEAD" }))!;
    deepStrictEqual(head.status, 200);
    deepStrictEqual(await head.text(), "");
    const etag = head.headers.get("etag")!;
    ok(etag);
    const again = (await get("/console.css", { headers: { "if-none-match": etag } }))!;
    deepStrictEqual(again.status, 304);
    await again.body?.cancel();
  });

  await t.step("other paths and methods return null", () => {
    deepStrictEqual(handle(new Request("http://localhost/app/login", { method: "POST" })), null);
    deepStrictEqual(handle(new Request("http://localhost/", { method: "POST" })), null);
    deepStrictEqual(handle(new Request("http://localhost/src/client/client.js")), null);
    deepStrictEqual(handle(new Request("http://localhost/healthz")), null);
  });
});

Deno.test("server serves the console at / unless server.console is false", async () => {
  {
    await using server = await startServer();
    const res = await fetch(`${server.url}/`);
    deepStrictEqual(res.status, 200);
    ok((await res.text()).includes("<title>IM console</title>"));
  }
  {
    await using server = await startServer({ server: { console: false } });
    const res = await fetch(`${server.url}/`);
    deepStrictEqual(res.status, 404);
    await res.body?.cancel();
  }
});

Deno.test({
  name: "console: two users log in and exchange messages, statuses and receipts",
  ignore: !hasChromium,
  async fn() {
    await using server = await startServer();
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    const errors: string[] = [];
    try {
      const open = async () => {
        const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
        const page = await context.newPage();
        page.on("pageerror", (error) => errors.push(String(error)));
        page.on("console", (m) => {
          // The wrong password below is meant to fail.
          if (m.type() === "error" && !m.text().includes("401 (Unauthorized)")) {
            errors.push(m.text());
          }
        });
        await page.goto(`${server.url}/`);
        return page;
      };
      const logIn = async (page: Page, username: string, password: string) => {
        await page.fill("#username", username);
        await page.fill("#password", password);
        await page.click("#login");
        await page.waitForSelector('#state[data-state="open"]');
      };
      const sendText = async (page: Page, to: string, text: string) => {
        await page.fill("#to", to);
        await page.selectOption("#kind", "2001");
        await page.fill("#text", text);
        await page.click("#send");
      };

      const alice = await open();
      const bob = await open();

      // A wrong password shows the server's 401.
      await alice.fill("#username", "alice");
      await alice.fill("#password", "wrong");
      await alice.click("#login");
      await alice.waitForSelector("#login-error:has-text('401')");

      await logIn(alice, "alice", "alice-pw");
      await logIn(bob, "bob", "bob-pw");
      deepStrictEqual(await alice.textContent("#identity"), `u1 / ${await clientName(alice)}`);

      // Alice → Bob: Bob sees the text, Alice sees 200 SUCCESS and Bob's receipt.
      await sendText(alice, "u2", "Hello Bob, the console works");
      await bob.waitForSelector('#messages li.in[data-from="u1"]:has-text("Hello Bob")');
      await alice.waitForSelector("#messages li.out .status.ok:has-text('200 SUCCESS')");
      await alice.waitForSelector("#messages li.out .receipt.ok:has-text('u2')");
      await bob.waitForSelector("#messages li.in .status.ok:has-text('receipt 200')");

      // Bob → Alice.
      await sendText(bob, "u1", "Hi Alice, got it");
      await alice.waitForSelector('#messages li.in[data-from="u2"]:has-text("Hi Alice")');
      await bob.waitForSelector("#messages li.out .receipt.ok:has-text('u1')");

      // A targeted notice.
      await alice.selectOption("#kind", "3003");
      await alice.fill("#notice-title", "Deploy");
      await alice.fill("#notice-msg", "Release 1.2 is live");
      await alice.fill("#notice-target", "/releases/1.2");
      await alice.click("#send");
      await bob.waitForSelector("#messages li.in:has-text('Release 1.2 is live')");
      await bob.waitForSelector("#messages li.in .kind:has-text('3003')");

      // A type no plugin claims: the 9001 status is shown as an error.
      await alice.selectOption("#kind", "custom");
      await alice.fill("#custom-type", "4242");
      await alice.fill("#custom-body", '{"ping":true}');
      await alice.click("#send");
      await alice.waitForSelector("#messages li.out .status.bad:has-text('403 TYPE_ERROR')");
      await alice.waitForSelector("#send-error:has-text('TYPE_ERROR')");
      // ... and the entry itself looks refused, with the 9001's code and msg.
      const refusal = await alice.textContent("#messages li.out.refused .refusal");
      ok(refusal?.includes("Refused, not delivered: 403 TYPE_ERROR"), String(refusal));
      ok(refusal?.includes("4242"), `the server's msg names the type: ${refusal}`);
      deepStrictEqual(await alice.locator("#messages li.out.refused").count(), 1);

      // A text to a user who is not online: accepted, and stored for later.
      await alice.selectOption("#kind", "2001");
      await sendText(alice, "u3", "For Carol when she comes");
      await alice.waitForSelector(
        "#messages li.out:has-text('For Carol') .status.ok:has-text('200 SUCCESS')",
      );
      await alice.waitForSelector(
        "#messages li.out:has-text('For Carol') .offline:has-text('u3 is not online')",
      );
      await alice.fill("#to", "u2");

      // The raw log shows frames both ways, their statuses and the receipts.
      await alice.waitForSelector("#log li.out .summary:has-text('1000 REGISTER')");
      await alice.waitForSelector("#log li.in .summary:has-text('9001 SEND_STATUS')");
      await alice.waitForSelector("#log li.in .summary:has-text('9101 RECEIPT')");
      ok(await alice.locator("#log li").count() >= 8);

      await alice.selectOption("#kind", "2001");
      await alice.fill("#text", "See you at the standup");
      const shot = await alice.screenshot({ fullPage: true });
      ok(shot.byteLength > 10_000, "the screenshot has content");
      if (!exists(SCREENSHOT) || Deno.env.get("UPDATE_SCREENSHOT") === "1") {
        await Deno.mkdir(new URL(".", SCREENSHOT), { recursive: true });
        await Deno.writeFile(SCREENSHOT, shot);
      }

      // A reload keeps the tab's session: Bob is connected again without a password, as the
      // same client, and the conversation with Alice ("To" is u1) comes back from history.
      const bobName = await clientName(bob);
      await bob.reload();
      await bob.waitForSelector('#state[data-state="open"]');
      deepStrictEqual(await bob.textContent("#identity"), `u2 / ${bobName}`);
      ok(await bob.isVisible("#compose-panel"), "compose panel after reload");
      await bob.waitForSelector("#messages li.history.in:has-text('Hello Bob')");
      await bob.waitForSelector("#messages li.history.out:has-text('Hi Alice')");
      await sendText(alice, "u2", "After your reload");
      await bob.waitForSelector('#messages li.in[data-from="u1"]:has-text("After your reload")');

      // Logging out closes the connection and forgets the session: a reload asks to log in.
      await bob.click("#logout");
      await bob.waitForSelector('#state[data-state="closed"]');
      await bob.reload();
      await bob.waitForSelector("#login-panel:not([hidden])");
      deepStrictEqual(await bob.textContent("#state"), "idle");

      // A kick ends Alice's session for good, and the page says so.
      const kick = await fetch(`${server.url}/server/kick`, {
        method: "POST",
        headers: { authorization: `Bearer ${TEST_API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ userId: "u1" }),
      });
      deepStrictEqual(kick.status, 200);
      await kick.body?.cancel();
      await alice.waitForSelector("#login-error:has-text('4003 kicked')");
      await alice.waitForSelector('#state[data-state="closed"]');
      deepStrictEqual(errors, []);
    } finally {
      await browser.close();
    }
  },
});

async function clientName(page: Page): Promise<string> {
  return await page.inputValue("#client-name");
}
