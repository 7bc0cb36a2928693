"""`python -m prompt_tuning.infer --gin_file=... --gin.PROMPT_FILE=...`: predictions of a prompt."""

from prompt_tuning import cli


def _command():
  from prompt_tuning.train import inference
  return inference.infer


def main() -> None:
  cli.run(_command, name="infer")


if __name__ == "__main__":
  main()
