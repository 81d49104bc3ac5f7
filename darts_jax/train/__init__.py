"""Training: the trainers behind `main.py` (`cnn_search`, `cnn_eval`, `rnn_search`, `rnn_eval`,
`toy_search`), the run loop they share (`loop`), and what it is built from: checkpoints,
metrics, data parallelism (`parallel`), the task table (`tasks`) and XLA flags."""
