"""What distilled sets are for: a replay memory for class-incremental learning (`continual`), a
membership-inference audit (`privacy`) and a proxy for architecture search (`nas`). Each runs its
training jobs through the evaluator as executor tasks (one result file per job: resumable, on any
backend) and writes JSON-lines records, a summary and a plot."""
