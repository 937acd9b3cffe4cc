# closeflow: the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /bin/bash
PORT ?= 3000
# Where a running `make run-aws-local` stack names its resources for `make invoke`.
AWS_LOCAL_ENV_FILE ?= .closeflow/aws-local.env
WITH_MOTO := infra/with-moto.sh
# moto-backed suites, the trade-stream service test, and the console in headless Chromium.
TEST_FEATURES := closeflow-tests/moto,closeflow-embedded/moto,trade-stream/moto,closeflow-embedded/browser

.PHONY: run run-aws-local paper-broker test test-embedded template-lint sam-validate lint fmt bench build invoke chaos contract-test package

## run: the embedded single-process stack on 127.0.0.1:$(PORT): a durable SQLite store at
## CLOSEFLOW_DB (default .closeflow/closeflow.db; `:memory:` keeps nothing), no AWS
run:
	PORT=$(PORT) cargo run -p closeflow-embedded --bin closeflow -- serve

## run-aws-local: the same stack on DynamoDB + Streams, SQS FIFO and EventBridge, emulated:
## a private moto server, or the emulator at AWS_ENDPOINT_URL (LocalStack); Ctrl-C stops both
run-aws-local:
	cargo build -p closeflow-embedded --bin closeflow-aws-local
	PORT=$(PORT) AWS_LOCAL_ENV_FILE=$(AWS_LOCAL_ENV_FILE) infra/run-aws-local.sh

## paper-broker: the Alpaca-compatible paper broker on 127.0.0.1:PORT (default 4010, not
## make run's 3000): REST /v2 and trade_updates at /stream; SIM_BROKER_SCENARIOS,
## SIM_BROKER_PRICES, SIM_BROKER_POSITIONS, PAPER_ACCOUNT, PAPER_RATE_LIMIT,
## PAPER_KEY_ID/PAPER_SECRET_KEY (see README); holdings changed at /paper/positions
PAPER_PORT := $(if $(filter file,$(origin PORT)),4010,$(PORT))
paper-broker:
	PORT=$(PAPER_PORT) cargo run -p closeflow-paper-broker --bin closeflow-paper-broker

## test: the template (cfn-lint), then unit, domain and scenario tests on the embedded
## store and on DynamoDB, SQS and EventBridge (moto), the console in headless Chromium
## (infra/browser.sh installs chromium and chromium-driver when missing), then the contract test
test: template-lint
	infra/browser.sh >/dev/null
	$(WITH_MOTO) cargo test --workspace --features $(TEST_FEATURES)
	$(MAKE) contract-test

## contract-test: schemathesis fuzzes the embedded binary from its own /openapi.json
## (CONTRACT_TEST_SECONDS, default 120; CONTRACT_TEST_SEED, default 17)
contract-test:
	infra/contract-test.sh

## template-lint: cfn-lint on template.yaml (zero errors required)
template-lint:
	infra/venv.sh
	.venv/bin/cfn-lint template.yaml

## test-embedded: everything that needs no emulator
test-embedded:
	cargo test --workspace

## chaos: the deterministic chaos suite over SEEDS seeds (the test run uses 500);
## SEED=n replays one seed
SEEDS ?= 10000
chaos:
	CHAOS_SEEDS=$(SEEDS) $(if $(SEED),CHAOS_SEED=$(SEED)) cargo test -p closeflow-tests --test chaos -- --nocapture

## sam-validate: the template as SAM reads it (`sam validate --lint`; no AWS account or
## network). Not in make test: aws-sam-cli is a larger install than the tests need.
sam-validate:
	infra/venv.sh sam
	SAM_CLI_TELEMETRY=0 .venv/bin/sam validate --lint --template-file template.yaml

## lint: formatting, clippy (warnings are errors), cfn-lint and sam validate --lint
lint: template-lint sam-validate
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --features $(TEST_FEATURES) -- -D warnings

fmt:
	cargo fmt --all

## bench: performance targets as a table (round trips on moto, latency on the embedded store)
LAMBDAS := http-api broker-webhook outbox-relay order-submitter order-watch event-publisher reconciler cleanup position-sync guard-events
bench:
	cargo build --release $(addprefix -p ,$(LAMBDAS))
	$(WITH_MOTO) cargo bench -p closeflow-tests --bench bench

## package: every function built for provided.al2023/arm64 by `sam build` (cargo-lambda +
## zig from the venv, no Docker) into .aws-sam/build, zipped as sam deploy uploads them
## (.aws-sam/zips); prints each artifact and its zipped size. See README "Deploying".
package:
	infra/package.sh

## invoke: run one function's handler on a sample event, e.g.
##   make invoke FN=http-api EVENT=events/http-api-put-position.json
## (on a running `make run-aws-local` stack, found via AWS_LOCAL_ENV_FILE; else the embedded store
## unless TABLE_NAME/AWS_ENDPOINT_URL point at DynamoDB; see README)
FN ?= http-api
EVENT ?= events/http-api-put-position.json
invoke:
	@if [ -z "$$TABLE_NAME" ] && [ -n "$(AWS_LOCAL_ENV_FILE)" ] && [ -f "$(AWS_LOCAL_ENV_FILE)" ]; then \
	  echo "invoke: on the make run-aws-local stack ($(AWS_LOCAL_ENV_FILE))" >&2; \
	  set -a; . "$(abspath $(AWS_LOCAL_ENV_FILE))"; set +a; \
	fi; \
	cargo run -q -p closeflow-embedded --bin closeflow-invoke -- $(FN) $(EVENT)

build:
	cargo build --workspace --all-targets
