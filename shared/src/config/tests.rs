use super::*;

fn load(text: &str) -> Result<ExperimentConfig> {
    ExperimentConfig::from_toml_str(text, "test.toml", &[])
}

fn field_of(err: Error) -> String {
    match err {
        Error::Config { field, .. } => field,
        other => panic!("expected a config error, got {other}"),
    }
}

#[test]
fn empty_config_gives_paper_defaults() {
    let cfg = load("").unwrap();
    assert_eq!(cfg.data.window, 64);
    assert_eq!(cfg.model.codebook_size, 512);
    assert_eq!(cfg.model.patch_days, 8);
    assert_eq!(cfg.splits.test.end, date(2024, 3, 8));
    assert_eq!(cfg.train.lr, 1e-4);
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let err = load("[model]\ncodebook_sise = 3\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("codebook_sise"), "{msg}");
    assert_eq!(field_of(err), "model.codebook_sise");
}

#[test]
fn out_of_range_value_names_the_field() {
    assert_eq!(
        field_of(load("[data]\nwindow = 1\n").unwrap_err()),
        "data.window"
    );
    assert_eq!(
        field_of(load("[train]\nlr = -1.0\n").unwrap_err()),
        "train.lr"
    );
    assert_eq!(
        field_of(load("[model]\npatch_days = 7\n").unwrap_err()),
        "model.patch_days"
    );
}

#[test]
fn wrong_type_names_the_field() {
    let err = load("[train]\nbatch_size = \"big\"\n").unwrap_err();
    assert_eq!(field_of(err), "train.batch_size");
}

#[test]
fn overlapping_splits_are_rejected() {
    let text = "[splits]\ntrain = { start = \"2008-01-01\", end = \"2020-06-30\" }\n";
    assert_eq!(field_of(load(text).unwrap_err()), "splits.valid.start");
}

#[test]
fn overrides_are_typed_and_validated() {
    let cfg = ExperimentConfig::from_toml_str(
        "",
        "t",
        &["train.lr=3e-4".into(), "model.kind=storm".into()],
    )
    .unwrap();
    assert_eq!(cfg.train.lr, 3e-4);
    let text = "[splits]\ntest = { start = \"2021-04-01\", end = \"2024-03-08\" }\n";
    let cfg =
        ExperimentConfig::from_toml_str(text, "t", &["splits.test.end=2024-01-31".into()]).unwrap();
    assert_eq!(cfg.splits.test.end, date(2024, 1, 31));
    let err = ExperimentConfig::from_toml_str("", "t", &["model.nope=1".into()]).unwrap_err();
    assert!(err.to_string().contains("nope"));
    let err = ExperimentConfig::from_toml_str("", "t", &["train.lr".into()]).unwrap_err();
    assert!(err.to_string().contains("key=value"));
}

#[test]
fn relative_sources_resolve_against_the_config_dir() {
    assert_eq!(
        resolve_source("builtin:dj30", Some(Path::new("/x"))),
        "builtin:dj30"
    );
    assert_eq!(
        resolve_source("d.csv", Some(Path::new("/cfg"))),
        "/cfg/d.csv"
    );
    assert_eq!(
        resolve_source("/abs/d.csv", Some(Path::new("/cfg"))),
        "/abs/d.csv"
    );
}

#[test]
fn base_configs_merge_table_by_table_and_resolve_their_own_paths() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(
        shared.join("base.toml"),
        "name = \"b\"\n[data]\nsource = \"prices.csv\"\nwindow = 16\n[model]\ncodebook_size = 64\n\
         patch_days = 4\n[train]\nlr = 1e-3\n",
    )
    .unwrap();
    let child = dir.path().join("child.toml");
    std::fs::write(
        &child,
        "base = \"shared/base.toml\"\nname = \"c\"\n[model]\nkind = \"gru\"\n[model.sequence]\nhidden = 16\n",
    )
    .unwrap();
    let cfg = ExperimentConfig::load(
        &child,
        &["train.epochs=3".into(), "train.warmup_epochs=1".into()],
    )
    .unwrap();
    assert_eq!(cfg.name, "c");
    assert_eq!(cfg.model.kind, ModelKind::Gru);
    assert_eq!(cfg.model.sequence.hidden, 16);
    assert_eq!(
        cfg.model.codebook_size, 64,
        "untouched keys come from the base"
    );
    assert_eq!(cfg.data.window, 16);
    assert_eq!(cfg.train.lr, 1e-3);
    assert_eq!(cfg.train.epochs, 3);
    let expected = std::path::absolute(shared.join("prices.csv")).unwrap();
    assert_eq!(cfg.data.source, expected.display().to_string());

    std::fs::write(dir.path().join("a.toml"), "base = \"b.toml\"\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "base = \"a.toml\"\n").unwrap();
    let err = ExperimentConfig::load(&dir.path().join("a.toml"), &[]).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let err = ExperimentConfig::from_toml_str("base = \"x.toml\"\n", "t", &[]).unwrap_err();
    assert_eq!(field_of(err), "base");
}

#[test]
fn model_kinds_parse_and_validate_their_own_tables() {
    for kind in ModelKind::ALL {
        let cfg = load(&format!("[model]\nkind = \"{}\"\n", kind.name())).unwrap();
        assert_eq!(cfg.model.kind, kind);
    }
    for factor in ReferenceFactor::ALL {
        let text = format!(
            "[model]\nkind = \"reference\"\nreference = \"{}\"\n",
            factor.name()
        );
        assert_eq!(load(&text).unwrap().model.reference, factor);
    }
    let err =
        load("[data]\nwindow = 40\n[model]\nkind = \"reference\"\nreference = \"momentum_60d\"\n");
    assert_eq!(field_of(err.unwrap_err()), "data.window");
    let err = load("[model]\nkind = \"xgboost\"\n").unwrap_err();
    assert_eq!(field_of(err), "model.kind");
    // STORM's patch rule does not apply to a baseline.
    assert!(load("[data]\nwindow = 30\n[model]\nkind = \"lstm\"\n").is_ok());
    assert_eq!(
        field_of(load("[data]\nwindow = 30\n").unwrap_err()),
        "model.patch_days"
    );
    let err = load("[model]\nkind = \"transformer\"\n[model.sequence]\nhidden = 10\nheads = 4\n");
    assert_eq!(field_of(err.unwrap_err()), "model.sequence.heads");
    let err = load("[model]\nkind = \"factorvae\"\n[model.factorvae]\ngamma = -1.0\n");
    assert_eq!(field_of(err.unwrap_err()), "model.factorvae.gamma");
    let err = load("[model]\nkind = \"factorvae\"\n[model.factorvae]\nportfolios = 0\n");
    assert_eq!(field_of(err.unwrap_err()), "model.factorvae.portfolios");
    let cfg = load("[model]\nkind = \"hirevae\"\n[model.hirevae]\nmarket_latent = 2\n").unwrap();
    assert_eq!(
        cfg.model.hirevae,
        HireVaeConfig {
            market_latent: 2,
            market_portfolios: 10,
        }
    );
    for bad in ["market_latent = 0", "market_portfolios = 0"] {
        let err = load(&format!(
            "[model]\nkind = \"hirevae\"\n[model.hirevae]\n{bad}\n"
        ));
        let field = format!(
            "model.hirevae.{}",
            bad.split(' ').next().unwrap_or_default()
        );
        assert_eq!(field_of(err.unwrap_err()), field, "{bad}");
    }
    // The stock level is FactorVAE's and is validated as such.
    let err = load("[model]\nkind = \"hirevae\"\n[model.factorvae]\ngamma = -1.0\n");
    assert_eq!(field_of(err.unwrap_err()), "model.factorvae.gamma");
    let cfg =
        load("[model]\nkind = \"cafactor\"\n[model.cafactor]\ndepth = 3\nfactors = 4\n").unwrap();
    assert_eq!(
        cfg.model.cafactor,
        CaFactorConfig {
            depth: 3,
            factors: 4
        }
    );
    for bad in ["depth = 0", "depth = 4"] {
        let err = load(&format!(
            "[model]\nkind = \"cafactor\"\n[model.cafactor]\n{bad}\n"
        ));
        assert_eq!(field_of(err.unwrap_err()), "model.cafactor.depth", "{bad}");
    }
    let err = load("[model]\nkind = \"cafactor\"\n[model.cafactor]\nfactors = 0\n");
    assert_eq!(field_of(err.unwrap_err()), "model.cafactor.factors");
    let err = load("[model]\nkind = \"cafactor\"\n[model.cafactor]\nwidth = 8\n");
    assert_eq!(field_of(err.unwrap_err()), "model.cafactor.width");
    // at its defaults the table is left out of the serialised config, so older hashes do not change
    let plain = load("").unwrap();
    assert_eq!(
        plain.hash(),
        load("[model.cafactor]\ndepth = 2\nfactors = 6\n")
            .unwrap()
            .hash()
    );
    assert!(!serde_json::to_string(&plain.model)
        .unwrap()
        .contains("cafactor"));
}

#[test]
fn factor_module_options_default_to_the_old_behaviour_and_parse() {
    let cfg = load("").unwrap();
    assert_eq!(cfg.model.factor_pooling, FactorPooling::Mean);
    assert_eq!(cfg.model.stock_embedding, StockEmbedding::Learned);
    assert_eq!(cfg.model.reconstruction, Reconstruction::Mean);
    let text = "[model]\nfactor_pooling = \"attention\"\nstock_embedding = \"none\"\n\
                reconstruction = \"squared_norm\"\n";
    let cfg = load(text).unwrap();
    assert_eq!(cfg.model.factor_pooling, FactorPooling::Attention);
    assert_eq!(cfg.model.stock_embedding, StockEmbedding::None);
    assert_eq!(cfg.model.reconstruction, Reconstruction::SquaredNorm);
    let cfg = ExperimentConfig::from_toml_str("", "t", &["model.factor_pooling=attention".into()])
        .unwrap();
    assert_eq!(cfg.model.factor_pooling, FactorPooling::Attention);
}

#[test]
fn factor_module_options_at_their_defaults_leave_the_config_hash_unchanged() {
    let plain = load("").unwrap();
    let explicit = load(
        "[model]\nfactor_pooling = \"mean\"\nstock_embedding = \"learned\"\nreconstruction = \"mean\"\n",
    )
    .unwrap();
    assert_eq!(plain.hash(), explicit.hash());
    let json = serde_json::to_string(&plain.model).unwrap();
    for key in ["factor_pooling", "stock_embedding", "reconstruction"] {
        assert!(
            !json.contains(key),
            "{key} serialised at its default: {json}"
        );
    }
    let changed = load("[model]\nfactor_pooling = \"attention\"\n").unwrap();
    assert_ne!(plain.hash(), changed.hash());
    // A non-default value survives a round trip through the serialised form.
    let back: ModelConfig =
        serde_json::from_str(&serde_json::to_string(&changed.model).unwrap()).unwrap();
    assert_eq!(back.factor_pooling, FactorPooling::Attention);
}

#[test]
fn bad_factor_module_options_name_the_field_and_the_choices() {
    let err = load("[model]\nfactor_pooling = \"max\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("mean") && msg.contains("attention"), "{msg}");
    assert_eq!(field_of(err), "model.factor_pooling");
    let err = load("[model]\nreconstruction = \"l1\"\n").unwrap_err();
    assert!(err.to_string().contains("squared_norm"), "{err}");
    assert_eq!(field_of(err), "model.reconstruction");
    assert_eq!(
        field_of(load("[model]\nstock_embedding = \"fixed\"\n").unwrap_err()),
        "model.stock_embedding"
    );
    // STORM-only options on a baseline are an error, not a silent no-op.
    let err = load("[model]\nkind = \"gru\"\nfactor_pooling = \"attention\"\n").unwrap_err();
    assert!(err.to_string().contains("storm"), "{err}");
    assert_eq!(field_of(err), "model.factor_pooling");
    let err = load("[model]\nkind = \"factorvae\"\nreconstruction = \"squared_norm\"\n");
    assert_eq!(field_of(err.unwrap_err()), "model.reconstruction");
    // The baselines have no per-stock embedding, so `none` is true of them and accepted.
    assert!(load("[model]\nkind = \"lstm\"\nstock_embedding = \"none\"\n").is_ok());
}

#[test]
fn a_baseline_built_on_a_storm_config_does_not_inherit_the_factor_module_options() {
    let dir = tempfile::tempdir().unwrap();
    let storm = dir.path().join("storm.toml");
    std::fs::write(
        &storm,
        "[model]\nfactor_pooling = \"attention\"\nreconstruction = \"squared_norm\"\nembed_dim = 32\n",
    )
    .unwrap();
    let gru = dir.path().join("gru.toml");
    std::fs::write(&gru, "base = \"storm.toml\"\n[model]\nkind = \"gru\"\n").unwrap();
    let cfg = ExperimentConfig::load(&gru, &[]).unwrap();
    assert_eq!(cfg.model.kind, ModelKind::Gru);
    assert_eq!(cfg.model.factor_pooling, FactorPooling::Mean);
    assert_eq!(cfg.model.reconstruction, Reconstruction::Mean);
    assert_eq!(
        cfg.model.embed_dim, 32,
        "other keys still come from the base"
    );
    // the same by an override, for the paper protocol's `set = ["model.kind=lstm"]`
    let cfg = ExperimentConfig::load(&storm, &["model.kind=lstm".into()]).unwrap();
    assert_eq!(cfg.model.factor_pooling, FactorPooling::Mean);
    let stays = ExperimentConfig::load(&storm, &["model.kind=storm".into()]).unwrap();
    assert_eq!(stays.model.factor_pooling, FactorPooling::Attention);
    // named by the baseline itself, or set after the kind, it is still refused
    let err = ExperimentConfig::load(
        &storm,
        &[
            "model.kind=gru".into(),
            "model.factor_pooling=attention".into(),
        ],
    )
    .unwrap_err();
    assert_eq!(field_of(err), "model.factor_pooling");
    std::fs::write(
        &gru,
        "base = \"storm.toml\"\n[model]\nkind = \"gru\"\nreconstruction = \"squared_norm\"\n",
    )
    .unwrap();
    let err = ExperimentConfig::load(&gru, &[]).unwrap_err();
    assert_eq!(field_of(err), "model.reconstruction");
    // an override that keeps the kind changes nothing, so it does not hide that error either
    let err = ExperimentConfig::load(&gru, &["model.kind=\"gru\"".into()]).unwrap_err();
    assert_eq!(field_of(err), "model.reconstruction");
}

#[test]
fn select_by_parses_names_its_choices_and_keeps_the_default_hash() {
    let plain = load("").unwrap();
    assert_eq!(plain.train.select_by, crate::config::SelectBy::RankIc);
    assert_eq!(
        plain.hash(),
        load("[train]\nselect_by = \"rank_ic\"\n").unwrap().hash()
    );
    let smoothed = load("[train]\nselect_by = \"smoothed_rank_ic\"\n").unwrap();
    assert_eq!(
        smoothed.train.select_by,
        crate::config::SelectBy::SmoothedRankIc
    );
    assert_ne!(plain.hash(), smoothed.hash());
    let err = load("[train]\nselect_by = \"loss\"\n").unwrap_err();
    assert!(err.to_string().contains("smoothed_rank_ic"), "{err}");
    assert_eq!(field_of(err), "train.select_by");
}

/// Every shipped experiment config (configs/*.toml, configs/experiments/*.toml) loads and validates.
#[test]
fn every_shipped_experiment_config_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    for dir in [root.clone(), root.join("experiments")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentConfig::load(&path, &[])
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "only {seen} configs under {}", root.display());
}

#[test]
fn data_missing_defaults_to_error_parses_each_policy_and_keeps_the_hash() {
    let default = load("").unwrap();
    assert_eq!(default.data.missing, MissingPolicy::Error);
    for policy in MissingPolicy::ALL {
        let cfg = load(&format!("[data]\nmissing = \"{policy}\"\n")).unwrap();
        assert_eq!(cfg.data.missing, policy);
        assert_eq!(policy.name().parse::<MissingPolicy>(), Ok(policy));
    }
    // the default is left out of the serialised config, so hashes of older configs do not change
    assert_eq!(
        load("[data]\nmissing = \"error\"\n").unwrap().hash(),
        default.hash()
    );
    assert_ne!(
        load("[data]\nmissing = \"ffill\"\n").unwrap().hash(),
        default.hash()
    );
    assert_eq!(
        field_of(load("[data]\nmissing = \"fill\"\n").unwrap_err()),
        "data.missing"
    );
    assert!("fill".parse::<MissingPolicy>().is_err());
}

#[test]
fn lightgbm_defaults_are_qlibs_alpha158_parameters_and_each_value_is_range_checked() {
    let cfg = load("[model]\nkind = \"lightgbm\"\n").unwrap();
    let g = &cfg.model.lightgbm;
    assert_eq!((g.learning_rate, g.num_leaves, g.max_depth), (0.2, 210, 8));
    assert_eq!((g.lambda_l1, g.lambda_l2), (205.6999, 580.9768));
    assert_eq!((g.colsample_bytree, g.subsample), (0.8879, 0.8789));
    assert_eq!((g.num_boost_round, g.early_stopping_rounds), (1000, 50));
    let cfg = load("[model]\nkind = \"lightgbm\"\n[model.lightgbm]\nmax_depth = -1\n").unwrap();
    assert_eq!(cfg.model.lightgbm.max_depth, -1);
    for (bad, field) in [
        ("learning_rate = 0.0", "learning_rate"),
        ("num_leaves = 1", "num_leaves"),
        ("max_depth = 0", "max_depth"),
        ("max_depth = -2", "max_depth"),
        ("lambda_l1 = -1.0", "lambda_l1"),
        ("lambda_l2 = inf", "lambda_l2"),
        ("colsample_bytree = 1.5", "colsample_bytree"),
        ("subsample = 0.0", "subsample"),
        ("num_boost_round = 0", "num_boost_round"),
        ("early_stopping_rounds = 1000000", "early_stopping_rounds"),
        ("threads = 0", "threads"),
        ("min_data_in_leaf = 5", "min_data_in_leaf"),
    ] {
        let err = load(&format!(
            "[model]\nkind = \"lightgbm\"\n[model.lightgbm]\n{bad}\n"
        ));
        assert_eq!(
            field_of(err.unwrap_err()),
            format!("model.lightgbm.{field}"),
            "{bad}"
        );
    }
    // at its defaults the table is left out of the serialised config, so older hashes do not change
    let plain = load("").unwrap();
    assert!(!serde_json::to_string(&plain.model)
        .unwrap()
        .contains("lightgbm"));
    assert_eq!(
        plain.hash(),
        load("[model.lightgbm]\nnum_leaves = 210\n").unwrap().hash()
    );
}
