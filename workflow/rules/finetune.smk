rule finetune:
    input:
        encoder="results/pretrain/{method}/seed{seed}/encoder.pt",
        parent="results/pretrain/{method}/seed{seed}/run_id.txt",
        data=target_file,
    output:
        model="results/finetune/{method}/{strategy}/{target}/seed{seed}/model.pt",
        run_id="results/finetune/{method}/{strategy}/{target}/seed{seed}/run_id.txt",
    log:
        "logs/finetune/{method}/{strategy}/{target}/seed{seed}.log",
    resources:
        gpu=res("finetune", "gpu"),
        runtime=res("finetune", "runtime"),
        mem_mb=res("finetune", "mem_mb"),
        cpus_per_task=res("finetune", "cpus_per_task"),
        checkpoint_every_epochs=res("finetune", "checkpoint_every_epochs"),
        checkpoint_every_minutes=res("finetune", "checkpoint_every_minutes"),
    params:
        settings=finetune_json,
        code=code_hash("finetune"),
        ckpt_dir="checkpoints/finetune/{method}/{strategy}/{target}/seed{seed}",
    shell:
        f"{TRAIN_ENV}"
        " {ASCL} finetune --settings {params.settings:q} "
        f"{CHECKPOINT_ARGS}"
        " --seed {wildcards.seed} "
        "--encoder {input.encoder} --parent-run-id $(cat {input.parent}) --data {input.data} "
        "--out {output.model} --ckpt-dir {params.ckpt_dir} --run-id-out {output.run_id} "
        "--tag rule=finetune --tag target={wildcards.target} "
        "--tag wildcards=method={wildcards.method},strategy={wildcards.strategy},"
        "target={wildcards.target},seed={wildcards.seed} > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule finetune_all:
    input:
        [
            f"{model_dir(m, st, t, s)}/model.pt"
            for m, st, t in ascl_config.finetune_jobs(config)
            for s in SEEDS
        ],
