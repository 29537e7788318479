// Command-line helpers (cli.h).
#include "cli.h"

#include <string.h>

bool kiln_cli_value(int argc, char **argv, int *i, const char *name, const char **value) {
  size_t len = strlen(name);
  if (strncmp(argv[*i], name, len) != 0) return false;
  if (argv[*i][len] == '=') {
    *value = argv[*i] + len + 1;
    return true;
  }
  if (argv[*i][len] != '\0') return false;
  *value = *i + 1 < argc ? argv[++*i] : NULL;
  return true;
}
