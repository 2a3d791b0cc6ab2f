localrules:
    download,
    download_corruptions,


rule download:
    output:
        dataset_file("{dataset}"),
    log:
        "logs/download/{dataset}.log",
    params:
        url=lambda wc: config["data"].get("urls", {}).get(wc.dataset, ""),
        size=IMAGE_SIZE_ARG,
        code=code_hash("download"),
    shell:
        "{ASCL} download {wildcards.dataset} --out {output} {params.size} "
        "$( [ -n '{params.url}' ] && echo --url '{params.url}' ) > {log} 2>&1"
        f"{REPORT_SIGNAL}"


# CIFAR-10-C (or its offline stand-in): a directory with one .npz per corruption.
rule download_corruptions:
    output:
        directory(corruptions_dir()),
    log:
        f"logs/download/{config['data']['corruptions']}.log",
    params:
        name=config["data"]["corruptions"],
        url=config["data"].get("urls", {}).get(config["data"]["corruptions"], ""),
        size=IMAGE_SIZE_ARG,
        code=code_hash("download_corruptions"),
    shell:
        "{ASCL} download {params.name} --out {output} {params.size} "
        "$( [ -n '{params.url}' ] && echo --url '{params.url}' ) > {log} 2>&1"
        f"{REPORT_SIGNAL}"


rule data_all:
    input:
        [dataset_file(config["data"]["source"]), corruptions_dir()]
        + [dataset_file(name) for name in config["data"]["transfer"].values()],
