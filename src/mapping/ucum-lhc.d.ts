// Type declarations for the part of @lhncbc/ucum-lhc that lhn-bridge uses (the package ships none).
declare module '@lhncbc/ucum-lhc' {
  interface ConvertUnitResult {
    status: 'succeeded' | 'invalid' | 'failed' | 'error';
    toVal: number | null;
    msg: string[];
  }
  interface ValidateUnitResult {
    status: 'valid' | 'invalid' | 'error';
  }
  interface UcumLhcUtils {
    convertUnitTo(fromUnitCode: string, fromVal: number, toUnitCode: string): ConvertUnitResult;
    validateUnitString(unitString: string, suggest?: boolean): ValidateUnitResult;
  }
  const ucum: { UcumLhcUtils: { getInstance(): UcumLhcUtils } };
  export default ucum;
}
