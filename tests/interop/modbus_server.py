"""A pymodbus Modbus TCP server for tests/ingest_modbus.rs.

Unit 1 serves holding registers 0..9 with known values, and registers
100..103 that always answer exception 0x04 (server device failure).

    python3 tests/interop/modbus_server.py PORT [rtu]
    python3 tests/interop/modbus_server.py serial DEVICE

With `rtu` the server speaks RTU frames over TCP (as a serial device server does);
`serial DEVICE` serves RTU on a serial line (19200 baud, 8N1: a pty pair made by
socat stands in for the line, and Linux ptys do not take a parity setting).
"""

import asyncio
import logging
import struct
import sys

try:
    from pymodbus.constants import ExcCodes
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice
except ImportError as e:  # pragma: no cover
    sys.stderr.write(f"pymodbus missing ({e}): python3 -m pip install -r tests/interop/requirements.txt\n")
    sys.exit(3)


def f32_words(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


# Holding registers 0..9 of unit 1.
REGISTERS = [1234, 0xFFF9] + f32_words(21.5) + f32_words(-3.25)[::-1] + [0, 40, 0xBEEF, 7]
FAILING = range(100, 104)


async def action(function_code, start_address, address, count, current_registers, set_values):
    if address < FAILING.stop and address + count > FAILING.start:
        return ExcCodes.DEVICE_FAILURE
    return None


def device():
    return SimDevice(
        id=1,
        simdata=[
            SimData(address=0, values=REGISTERS, datatype=DataType.REGISTERS),
            SimData(address=100, values=[1, 2, 3, 4], datatype=DataType.REGISTERS),
        ],
        action=action,
    )


async def main(port, framer):
    server = ModbusTcpServer([device()], address=("127.0.0.1", port), framer=framer)
    await server.serve_forever()


async def main_serial(path):
    server = ModbusSerialServer(
        [device()], framer=FramerType.RTU, port=path, baudrate=19200, bytesize=8, parity="N", stopbits=1
    )
    await server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1] == "serial":
        asyncio.run(main_serial(sys.argv[2]))
    else:
        rtu = len(sys.argv) > 2 and sys.argv[2] == "rtu"
        asyncio.run(main(int(sys.argv[1]), FramerType.RTU if rtu else FramerType.SOCKET))
