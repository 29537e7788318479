// `kiln import`: an imported ONNX model written as a Kiln JSON model plus a .safetensors file with
// its params, each through a temporary file renamed into place so a reader never sees half a file.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "onnx_import.h"

// Writes text to path via path.tmp.XXXXXX + rename.
static bool write_atomically(const char *path, const char *text, char *err, size_t errlen) {
  char *tmp = NULL;
  if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) abort();
  int fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
  if (f && fclose(f) != 0) ok = false;
  if (!f && fd >= 0) close(fd);
  if (ok && kiln_rename_into_place(tmp, path) != 0) ok = false;
  if (!ok) {
    snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
    if (fd >= 0) unlink(tmp);
  }
  free(tmp);
  return ok;
}

// The layout of docs/model-format.md's examples: one top-level field, input, output, param or
// node per line, so the file diffs well.
static char *model_text(json_object *doc) {
  const int flags = JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) abort();
  fputs("{", f);
  bool first = true;
  json_object_object_foreach(doc, key, val) {
    json_object *k = json_object_new_string(key);
    fprintf(f, "%s\n  %s: ", first ? "" : ",", json_object_to_json_string_ext(k, 0));
    json_object_put(k);
    first = false;
    if (!json_object_is_type(val, json_type_array) || json_object_array_length(val) == 0) {
      fputs(json_object_to_json_string_ext(val, flags), f);
      continue;
    }
    fputs("[", f);
    for (size_t i = 0; i < json_object_array_length(val); i++)
      fprintf(f, "%s\n    %s", i ? "," : "",
              json_object_to_json_string_ext(json_object_array_get_idx(val, i), flags));
    fputs("\n  ]", f);
  }
  fputs("\n}", f);
  fclose(f);
  return text;
}

bool kiln_onnx_write(kiln_onnx_model *m, const char *json_path, kiln_diag *d) {
  size_t len = strlen(json_path);
  if (len < 6 || strcmp(json_path + len - 5, ".json") != 0) {
    kiln_diag_error(d, NULL, "-o %s: the output of `kiln import` must be a .json file", json_path);
    return false;
  }
  char *weights = NULL;
  if (asprintf(&weights, "%.*s.safetensors", (int)(len - 5), json_path) < 0) abort();
  const char *slash = strrchr(weights, '/');
  json_object_object_add(m->json, "weights", json_object_new_string(slash ? slash + 1 : weights));
  char err[600];
  bool ok = kiln_safetensors_write(weights, m->count, (const char *const *)m->names, m->arrays, err,
                                   sizeof err) == KILN_OK;
  if (ok) {
    char *text = model_text(m->json);
    ok = write_atomically(json_path, text, err, sizeof err);
    free(text);
  }
  if (!ok) kiln_diag_error(d, NULL, "%s", err);
  free(weights);
  return ok;
}
