/* grammar/ast.c: names of the syntax tree's value kinds (its nodes live in a
 * BaseArena, base/base_alloc.h). */
#include "ast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ast_value_kind_name(AstValueKind k)
{
    switch (k) {
    case AST_INT: return "an integer";
    case AST_FLOAT: return "a number";
    case AST_STRING: return "a string";
    case AST_WORD: return "a word";
    case AST_TUPLE: return "a tuple";
    case AST_LIST: return "a list";
    case AST_CALL: return "a call";
    case AST_SIZE: return "a size";
    }
    return "a value";
}
