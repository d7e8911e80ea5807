"""A WHEP client on aiortc, a WebRTC stack nobody here wrote.

POSTs its offer (ICE gathered first: no trickle) to the camera's /whep with
the room secret as a bearer token, applies the answer, decodes the H.264
frames it receives, and reads the test pattern's timestamp strip from them
(48 bits, MSB first, 12x16 px blocks from x=0, sampled at row 8 of the
green channel, as harness.mjs readStrip does). Then it DELETEs its session
and prints one JSON line: frames decoded, their size, and the first and last
strip values with the wall-clock times they were decoded.

The TLS certificate is pinned by its SHA-256 fingerprint (the one
/api/info and the provisioning tool show), not by a CA.

Usage: whep_client.py HOST PORT FINGERPRINT SECONDS, with the room secret
in the WHEP_TOKEN environment variable (never on the command line).
"""

import asyncio
import hashlib
import http.client
import json
import os
import ssl
import sys
import time

from aiortc import RTCPeerConnection, RTCSessionDescription


def request(host, port, fingerprint, method, path, body=b"", headers=None):
    """One HTTPS request to the camera; checks the certificate's fingerprint."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # pinned below instead
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    connection.connect()
    der = connection.sock.getpeercert(binary_form=True)
    seen = hashlib.sha256(der).hexdigest()
    if seen != fingerprint.replace(":", "").lower():
        raise SystemExit(f"certificate fingerprint {seen} is not the camera's")
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def read_strip(frame):
    """The capture time (ms) the test pattern wrote into this frame."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    row = bytes(plane)[8 * plane.line_size:9 * plane.line_size]
    value = 0
    for bit in range(48):
        green = row[(bit * 12 + 6) * 3 + 1]
        value = (value << 1) | (1 if green > 125 else 0)
    return value


async def main():
    host, port, fingerprint, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    token = os.environ["WHEP_TOKEN"]
    auth = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    tracks = asyncio.Queue()
    pc.on("track", lambda track: tracks.put_nowait(track))
    await pc.setLocalDescription(await pc.createOffer())

    started = time.time()
    status, headers, body = await loop.run_in_executor(
        None, lambda: request(host, port, fingerprint, "POST", "/whep", pc.localDescription.sdp.encode(),
                              {**auth, "Content-Type": "application/sdp"}))
    if status != 201:
        raise SystemExit(f"POST /whep answered {status}: {body[:200]!r}")
    headers = {k.lower(): v for k, v in headers.items()}
    location = headers["location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))

    track = await asyncio.wait_for(tracks.get(), 10)
    frames, first, last, size = 0, None, None, None
    until = time.time() + seconds
    first_frame_ms = None
    while time.time() < until:
        frame = await asyncio.wait_for(track.recv(), 10)
        now_ms = int(time.time() * 1000)
        if first_frame_ms is None:
            first_frame_ms = now_ms - int(started * 1000)
        frames += 1
        size = [frame.width, frame.height]
        strip = read_strip(frame)
        last = [strip, now_ms]
        if first is None:
            first = last

    status, _, _ = await loop.run_in_executor(
        None, lambda: request(host, port, fingerprint, "DELETE", location, headers=auth))
    await pc.close()
    print(json.dumps({"frames": frames, "size": size, "first": first, "last": last,
                      "first_frame_ms": first_frame_ms, "location": location, "delete_status": status}))


if __name__ == "__main__":
    asyncio.run(main())
