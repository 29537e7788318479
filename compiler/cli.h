// Command-line helpers shared by `kiln`'s subcommands (compiler/main.c, compiler/prune/).
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdbool.h>

// Matches argv[*i] against "--name VALUE" or "--name=VALUE". On a match sets *value (NULL when
// "--name" is the last argument), advances *i past a separate value and returns true.
bool kiln_cli_value(int argc, char **argv, int *i, const char *name, const char **value);

#endif
