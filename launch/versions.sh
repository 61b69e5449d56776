# Versions the build and the bundle agree on (sourced by launch/run.sh and launch/bundle.sh).
TORCH_VERSION=2.11.0
