"""Bringup of the OFT+ bimanual ALOHA: the graph (launch files, config), its local runner, demo
recording; evaluation/ and recipes/ hold the closed-loop evaluation and the simulation training
recipes."""
