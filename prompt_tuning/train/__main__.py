"""`python -m prompt_tuning.train --gin_file=... --gin.NAME=VALUE`: train a prompt (see cli.py)."""

from prompt_tuning import cli


def _command():
  from prompt_tuning.train import runner
  return runner.train


def main() -> None:
  cli.run(_command, name="train")


if __name__ == "__main__":
  main()
