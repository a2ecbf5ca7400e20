"""The other process of tests/test_interfaces_dds.py: publishes the reference ActionChunk and
serves SetInstruction (accepting only KNOWN_INSTRUCTIONS) until interrupted."""

from __future__ import annotations

from rclpy.node import Node

from oft_msgs.msg import ActionChunk
from oft_msgs.srv import SetInstruction
from tests.peers import reference_messages as ref
from tests.peers import spin_until_interrupted


class InterfacePeer(Node):
    def __init__(self) -> None:
        super().__init__('interface_peer')
        self.active = ref.INSTRUCTION
        self.publisher = self.create_publisher(ActionChunk, ref.CHUNK_TOPIC, 10)
        self.create_timer(0.1, lambda: self.publisher.publish(ref.reference_chunk()))
        self.create_service(SetInstruction, ref.SERVICE, self.on_set_instruction)

    def on_set_instruction(
        self, request: SetInstruction.Request, response: SetInstruction.Response
    ) -> SetInstruction.Response:
        if request.instruction in ref.KNOWN_INSTRUCTIONS:
            self.active = request.instruction
            response.success, response.message = True, f'now following {self.active!r}'
        else:
            response.success, response.message = False, f'unknown: {request.instruction!r}'
        response.active_instruction = self.active
        response.seen_in_training = self.active in ref.KNOWN_INSTRUCTIONS
        return response


def main() -> None:
    spin_until_interrupted(InterfacePeer)


if __name__ == '__main__':
    main()
