"""Launch files, configuration and the MuJoCo ALOHA simulation."""
