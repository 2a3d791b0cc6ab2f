rule pseudo_labels:
    input:
        encoder=lambda wc: encoder_path(pseudo_label_source(wc.method), wc.seed),
        data=dataset_file(config["data"]["source"]),
    output:
        "results/pretrain/{method}/seed{seed}/pseudo_labels.npz",
    log:
        "logs/pseudo_labels/{method}/seed{seed}.log",
    resources:
        gpu=res("evaluate", "gpu"),
        runtime=res("evaluate", "runtime"),
        mem_mb=res("evaluate", "mem_mb"),
        cpus_per_task=res("evaluate", "cpus_per_task"),
    params:
        settings=lambda wc: ascl_config.settings_json(
            ascl_config.pseudo_label_settings(config, wc.method)
        ),
        code=code_hash("pseudo_labels"),
    shell:
        f"{JOB_ENV}"
        " {ASCL} pseudo-labels --settings {params.settings:q} --seed {wildcards.seed} "
        "--encoder {input.encoder} --data {input.data} --out {output} > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule pretrain:
    input:
        data=dataset_file(config["data"]["source"]),
        pseudo_labels=pseudo_labels_input,
    output:
        encoder="results/pretrain/{method}/seed{seed}/encoder.pt",
        run_id="results/pretrain/{method}/seed{seed}/run_id.txt",
    log:
        "logs/pretrain/{method}/seed{seed}.log",
    resources:
        gpu=res("pretrain", "gpu"),
        runtime=res("pretrain", "runtime"),
        mem_mb=res("pretrain", "mem_mb"),
        cpus_per_task=res("pretrain", "cpus_per_task"),
        checkpoint_every_epochs=res("pretrain", "checkpoint_every_epochs"),
        checkpoint_every_minutes=res("pretrain", "checkpoint_every_minutes"),
    params:
        settings=pretrain_json,
        code=code_hash("pretrain"),
        ckpt_dir="checkpoints/pretrain/{method}/seed{seed}",
        labels=lambda wc, input: (
            f"--pseudo-labels {input.pseudo_labels}" if input.pseudo_labels else ""
        ),
    shell:
        f"{TRAIN_ENV}"
        " {ASCL} pretrain --settings {params.settings:q} "
        f"{CHECKPOINT_ARGS}"
        " --seed {wildcards.seed} "
        "--data {input.data} {params.labels} --out {output.encoder} "
        "--ckpt-dir {params.ckpt_dir} --run-id-out {output.run_id} --tag rule=pretrain "
        "--tag wildcards=method={wildcards.method},seed={wildcards.seed} > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule pretrain_all:
    input:
        [
            encoder_path(m, s)
            for m in ascl_config.pretrain_methods(config)
            for s in SEEDS
        ],
