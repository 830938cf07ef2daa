# Shortcuts; the README's Quick start and CI use the same scripts.
BIN := .venv/bin

.PHONY: up test check migrate clean

$(BIN)/opmas:
	python3 -m venv .venv && $(BIN)/pip install --quiet -e '.[test]'

up: $(BIN)/opmas
	$(BIN)/opmas up

test:
	./scripts/test

check: $(BIN)/opmas
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

migrate: $(BIN)/opmas
	$(BIN)/opmas migrate

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
