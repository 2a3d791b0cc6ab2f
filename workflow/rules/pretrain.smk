rule pretrain:
    input:
        data=dataset_file(config["data"]["source"]),
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
    params:
        settings=pretrain_json,
        code=code_hash("pretrain"),
        ckpt_dir="checkpoints/pretrain/{method}/seed{seed}",
    shell:
        JOB_ENV
        + " {ASCL} pretrain --settings {params.settings:q} --seed {wildcards.seed} "
        "--data {input.data} --out {output.encoder} --ckpt-dir {params.ckpt_dir} "
        "--run-id-out {output.run_id} --tag rule=pretrain "
        "--tag wildcards=method={wildcards.method},seed={wildcards.seed} > {log} 2>&1"


rule pretrain_all:
    input:
        [
            encoder_path(m, s)
            for m in ascl_config.pretrain_methods(config)
            for s in SEEDS
        ],
