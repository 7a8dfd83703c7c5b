// Public API of the SQL on FHIR v2 ViewDefinition engine: compile a view once, then turn
// resources into rows. Pure: no files, no network.
export {
  compileView,
  type CompiledView,
  type CompileViewOptions,
  type ExpressionPlan,
  type ViewColumn,
} from './compile-view.js';
export { ViewDefinitionError, ViewEvaluationError, type ViewIssue } from './errors.js';
export { referenceKeyOf, resourceKeyOf, parseLiteralReference } from './resource-keys.js';
