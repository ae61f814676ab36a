import { brokerConformance } from "./broker_conformance.ts";
import { MemoryBroker } from "../src/backends/broker_memory.ts";

brokerConformance("MemoryBroker", () => {
  let broker: MemoryBroker | undefined;
  return Promise.resolve({
    maxInstances: 1,
    broker() {
      if (broker) throw new Error("A MemoryBroker serves one instance");
      broker = new MemoryBroker();
      return Promise.resolve(broker);
    },
    connected: () => Promise.resolve(),
    cleanup: () => broker?.close() ?? Promise.resolve(),
  });
});
