# OFT+ bimanual ALOHA stack. `make help` lists the targets.
# Every target runs `setup` first (instant when nothing changed) and sources scripts/env.sh.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

# The ROS 2 distribution: ROS=kilted (the default) or ROS=jazzy from PyPI wheels, each with a
# venv, build and install folder of its own (scripts/distro.sh); with a system ROS 2 sourced,
# that one. Empty: the sourced one, else kilted.
ROS ?=
LAYOUT := $(shell $(if $(ROS),OFT_ROS=$(ROS)) bash scripts/distro.sh)
ifeq ($(LAYOUT),)
$(error ROS=$(ROS) is not available here (see the line above))
endif
$(foreach assignment,$(LAYOUT),$(eval $(assignment)))
export OFT_ROS
ENV := source scripts/env.sh &&
# Runs a command in a private network namespace with only loopback (when root), see the script.
ISOLATED := scripts/isolated.sh
SETUP_STAMP := $(OFT_VENV)/.setup-stamp
BUILD_STAMP := $(OFT_INSTALL)/.build-stamp
# Anything that changes what colcon installs (Python sources are symlinked, so not those).
BUILD_INPUTS := $(shell find src \( -name package.xml -o -name setup.py -o -name setup.cfg \
	-o -name CMakeLists.txt -o -name '*.msg' -o -name '*.srv' -o -path '*/resource/*' \
	-o -path '*/config/*' -o -path '*/launch/*' \) -type f 2>/dev/null) \
	$(wildcard checkpoints/*/*)
PYTEST_ARGS ?=

.PHONY: help setup build test lint bench demo demos train-sim eval-sim clean
TASK ?= put green pepper into pot
SCENE ?= put_x_into_pot
DURATION ?= 20
N ?= 50
EPISODES ?= 10
SEED ?= 0
MAX_SECONDS ?= 20
CHECKPOINT ?=
STEPS ?= 7200
FILM ?= 1
INSTALL ?=
# train-sim: empty means train_sim's defaults (36 demos, preset small, runs/train_sim/SCENE[-nofilm]).
DEMOS ?=
PRESET ?=
OUT ?=
# train-sim's vision backbone: empty = random init; pretrain = pretrain it on rendered layouts
# first; a backbone.pt path = start from that one (both keep it frozen while the policy trains).
VISION ?=
# GROUNDING=1: co-train "where is the named object" on rendered views (train --grounding).
GROUNDING ?=
# RECIPE=grounded: pretrained vision + grounding + four training stages (144 demos, ~4 h);
# STEPS does not apply to it (train_sim --recipe-steps).
RECIPE ?=
# eval-sim renders the cameras at the size the sim demos were recorded at (train_sim.py).
IMAGE_HEIGHT ?= 120
IMAGE_WIDTH ?= 160
# eval-sim's chunk merge rule; empty: config/params.yaml's (prefix: real-time chunking; sync for
# a checkpoint trained without --prefix-steps).
MERGE_RULE ?=
# demo's and eval-sim's sim real-time cap; empty: config/params.yaml's (1.0). 0.2: GPU-like latency
# in sim time.
REAL_TIME_FACTOR ?=
# eval-sim: hold each chunk until its observation is this many sim seconds old (0.32: the
# paper's latency); empty: as soon as computed.
CHUNK_LATENCY ?=

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

setup: $(SETUP_STAMP) ## create/update the venv (ROS=kilted: .venv, ROS=jazzy: .venv-jazzy) from the pins

$(SETUP_STAMP): requirements.txt $(wildcard requirements/ros-$(OFT_ROS).txt) scripts/setup.sh \
		scripts/distro.sh scripts/fix_cmake_exports.py
	bash scripts/setup.sh
	touch $@

build: $(BUILD_STAMP) ## colcon build the five packages into install/ (install-jazzy/ ...; only when stale)

$(BUILD_STAMP): $(SETUP_STAMP) $(BUILD_INPUTS)
	$(ENV) colcon --log-base $(OFT_BUILD)/log build --symlink-install \
		--build-base $(OFT_BUILD) --install-base $(OFT_INSTALL) \
		--cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$$(command -v python)" \
		--event-handlers console_direct- summary+
	touch $@

test: $(BUILD_STAMP) ## run every package's test/ and tests/ with an isolated DDS; ROS=jazzy on Jazzy
	$(ENV) $(ISOLATED) python -m pytest $(PYTEST_ARGS)

lint: $(SETUP_STAMP) ## ruff check + ruff format --check over the whole tree (ruff format . fixes it)
	$(ENV) ruff check . && ruff format --check .

bench: $(BUILD_STAMP) ## run every benchmark, one JSON per benchmark in bench_results/
	$(ENV) $(ISOLATED) python -m bench

demo: $(BUILD_STAMP) ## sim + policy_node + chunk_executor; TASK=".." SCENE=.. DURATION=20 REAL_TIME_FACTOR= -> runs/<time>/
	$(ENV) $(ISOLATED) python -m aloha_bringup.demo --task "$(TASK)" --scene $(SCENE) \
		--duration $(DURATION) $(if $(REAL_TIME_FACTOR),--real-time-factor $(REAL_TIME_FACTOR))

demos: $(BUILD_STAMP) ## record N scripted demos of SCENE as rosbag2 MCAP into demos/SCENE/
	$(ENV) $(ISOLATED) python -m aloha_bringup.record_demos --scene $(SCENE) -n $(N) \
		-o demos/$(SCENE)

train-sim: $(BUILD_STAMP) ## demos -> convert -> train small -> evaluate: SCENE=.. STEPS=7200 FILM=1 DEMOS=36 PRESET=small VISION=pretrain GROUNDING=1 RECIPE=grounded OUT= INSTALL=
	$(ENV) $(ISOLATED) python -m aloha_bringup.recipes.train_sim --scene $(SCENE) --steps $(STEPS) \
		$(if $(RECIPE),--recipe $(RECIPE)) \
		$(if $(filter 0,$(FILM)),--no-film) $(if $(INSTALL),--install $(INSTALL)) \
		$(if $(DEMOS),--episodes $(DEMOS)) $(if $(PRESET),--preset $(PRESET)) \
		$(if $(OUT),--out $(OUT)) $(if $(filter 1,$(GROUNDING)),--grounding) \
		$(if $(filter pretrain,$(VISION)),--pretrain-vision,$(if $(VISION),--init-vision $(VISION)))

eval-sim: $(BUILD_STAMP) ## closed loop through the ROS graph: CHECKPOINT=.. SCENE=.. EPISODES=10 -> runs/<time>/eval.json
	$(ENV) $(ISOLATED) python -m aloha_bringup.evaluation.eval_sim \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) --scene $(SCENE) \
		--episodes-per-instruction $(EPISODES) --seed $(SEED) --max-seconds $(MAX_SECONDS) \
		--image-height $(IMAGE_HEIGHT) --image-width $(IMAGE_WIDTH) \
		$(if $(MERGE_RULE),--merge-rule $(MERGE_RULE)) \
		$(if $(REAL_TIME_FACTOR),--real-time-factor $(REAL_TIME_FACTOR)) \
		$(if $(CHUNK_LATENCY),--chunk-latency $(CHUNK_LATENCY))

clean: ## remove the distribution's build outputs (keeps its venv)
	rm -rf $(OFT_BUILD) $(OFT_INSTALL) log bench_results
