"""`python -m prompt_tuning.eval --gin_file=... --gin.PROMPT_FILE=...`: metrics of a prompt."""

from prompt_tuning import cli


def _command():
  from prompt_tuning.train import inference
  return inference.evaluate


def main() -> None:
  cli.run(_command, name="eval")


if __name__ == "__main__":
  main()
