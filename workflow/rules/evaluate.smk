rule evaluate_pgd:
    input:
        model="results/finetune/{method}/{strategy}/{target}/seed{seed}/model.pt",
        parent="results/finetune/{method}/{strategy}/{target}/seed{seed}/run_id.txt",
        data=target_file,
    output:
        metrics="results/evaluate/{method}/{strategy}/{target}/seed{seed}/pgd.json",
    log:
        "logs/evaluate/{method}/{strategy}/{target}/seed{seed}/pgd.log",
    resources:
        gpu=res("evaluate", "gpu"),
        runtime=res("evaluate", "runtime"),
        mem_mb=res("evaluate", "mem_mb"),
        cpus_per_task=res("evaluate", "cpus_per_task"),
    params:
        settings=evaluate_json,
        code=code_hash("evaluate"),
    shell:
        JOB_ENV
        + " {ASCL} evaluate --settings {params.settings:q} --seed {wildcards.seed} "
        "--model {input.model} --parent-run-id $(cat {input.parent}) --data {input.data} "
        "--out {output.metrics} --tag rule=evaluate_pgd "
        "--tag wildcards=method={wildcards.method},strategy={wildcards.strategy},"
        "target={wildcards.target},seed={wildcards.seed} > {log} 2>&1"


rule evaluate_all:
    input:
        [
            pgd_metrics_path(m, st, t, s)
            for m, st, t in ascl_config.finetune_jobs(config)
            for s in SEEDS
        ],
