/** The plugin channel's reader: messages split over chunks, and the size cap. */
import { assert, assertEquals } from "../../tests/_assert.ts";
import { messages, OversizeMessageError } from "./ipc.ts";

function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

function framed(value: unknown): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(value));
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

Deno.test("messages() reads messages split across chunks", async () => {
  const whole = new Uint8Array([...framed({ a: 1 }), ...framed({ b: "two" })]);
  const got = [];
  for await (
    const message of messages(
      streamOf(whole.subarray(0, 3), whole.subarray(3, 11), whole.subarray(11)),
    )
  ) {
    got.push(message);
  }
  assertEquals(got, [{ a: 1 }, { b: "two" }]);
});

Deno.test("messages() refuses a message announced over the cap before buffering it", async () => {
  const head = new Uint8Array(4);
  new DataView(head.buffer).setUint32(0, 2 ** 31);
  let error: unknown;
  try {
    for await (const _ of messages(streamOf(head, new Uint8Array(10)), 1024)) {
      // Nothing is yielded.
    }
  } catch (caught) {
    error = caught;
  }
  assert(error instanceof OversizeMessageError, String(error));
});
