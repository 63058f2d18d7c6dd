"""A PLC's side of clipada's Modbus TCP server, for tests/it/plant_networks.rs: a real client (pymodbus).

Usage: modbus_client.py PORT

Polls the input registers at 100 Hz and, through the registers alone, triggers two parts
(coil 0) with a recipe switch between them (holding register 0 = 2). Prints one JSON object:
every distinct register snapshot it read (the Rust test checks them against the station's
result records), the recipe register after the switch, and the exception codes of requests the
server must refuse. Exits 1 with a message when the server stops answering as a PLC expects.
"""

import json
import sys
import time

from pymodbus.client import ModbusTcpClient

INPUT_REGISTERS = 26
SEQUENCE, STATE, NEXT_RECIPE = 0, 12, 13
READY, BUSY = 1, 2


def sequence(words):
    return words[SEQUENCE] << 16 | words[SEQUENCE + 1]


def main():
    port = int(sys.argv[1])
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    deadline = time.monotonic() + 60
    while not client.connect():
        if time.monotonic() > deadline:
            sys.exit(f"no Modbus server on port {port}")
        time.sleep(0.05)

    snapshots = []

    def read():
        reply = client.read_input_registers(0, count=INPUT_REGISTERS)
        if reply.isError():
            sys.exit(f"reading the input registers: {reply}")
        words = list(reply.registers)
        if not snapshots or snapshots[-1] != words:
            snapshots.append(words)
        return words

    def poll_until(what, done, seconds=120):
        until = time.monotonic() + seconds
        while True:
            words = read()
            if done(words):
                return words
            if time.monotonic() > until:
                sys.exit(f"timed out waiting for {what}; last read {words}")
            time.sleep(0.01)

    poll_until("ready", lambda w: w[STATE] & READY)
    for part, recipe in ((1, 1), (2, 2)):
        if recipe != 1:
            reply = client.write_register(0, recipe)
            if reply.isError():
                sys.exit(f"selecting recipe {recipe}: {reply}")
            poll_until(f"recipe {recipe} next", lambda w, r=recipe: w[NEXT_RECIPE] == r)
        reply = client.write_coil(0, True)
        if reply.isError():
            sys.exit(f"triggering part {part}: {reply}")
        poll_until(f"result {part}", lambda w, p=part: sequence(w) == p and not w[STATE] & BUSY)

    recipe_register = client.read_holding_registers(0, count=1).registers[0]

    def exception(reply):
        return reply.exception_code if reply.isError() else None

    refusals = {
        "input register 26": exception(client.read_input_registers(INPUT_REGISTERS, count=1)),
        "recipe 3 of 2": exception(client.write_register(0, 3)),
        "holding register 7": exception(client.write_register(7, 1)),
        "coil 1": exception(client.write_coil(1, True)),
    }
    # Still answering after the refusals.
    read()
    client.close()
    print(json.dumps({"snapshots": snapshots, "recipe_register": recipe_register, "refusals": refusals}))


if __name__ == "__main__":
    main()
