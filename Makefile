# parley's entry points. README.md and .ci/run call these targets; nothing else is needed.
#   make demo     set up, bring Kafka and Redis up, run the main job on local defaults
#   make test     set up, run the test suite (it starts Kafka and Redis itself when they are down)
#   make lint     ruff, mypy and the import contracts (lint-imports)
#   make helm     helm lint, helm template and kube-score of every scenario, helm-unittest (Go builds them)
#   make helm-install   install every scenario on a local control plane with fake GPU nodes, and check it
#   make k8s-up/k8s-down   start / stop that control plane (etcd, kube-apiserver, scheduler, controllers, kwok)
#   make up/down  start / stop (and wipe) the local Kafka and Redis

SHELL := bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint helm helm-install k8s-up k8s-down format up down kafka-up kafka-down redis-up redis-down clean help

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

setup:
	@VENV=$(VENV) bash scripts/setup.sh

kafka-up:
	@bash scripts/kafka.sh up

kafka-down:
	@bash scripts/kafka.sh down

redis-up:
	@bash scripts/redis.sh up

redis-down:
	@bash scripts/redis.sh down

up: kafka-up redis-up

down: kafka-down redis-down

demo: setup up
	@VENV=$(VENV) bash scripts/demo.sh

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check parley stream train engines tests scripts benchmarks
	$(BIN)/ruff format --check parley stream train engines tests scripts benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

helm:
	@bash scripts/helm-check.sh

helm-install: helm
	@bash scripts/helm-install.sh

k8s-up:
	@bash scripts/k8s.sh up

k8s-down:
	@bash scripts/k8s.sh down

format: setup
	$(BIN)/ruff check --fix parley stream train engines tests scripts benchmarks
	$(BIN)/ruff format parley stream train engines tests scripts benchmarks

clean: down
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
